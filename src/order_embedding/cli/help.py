"""What ``order-embedding COMMAND --help`` says about each command: a one-line summary for the
command list, a paragraph of description, and examples (the doc tests parse every example).

Direction words are those of the README (What and why): "below" means smaller coordinates and "above"
larger ones; a caption lies below the images it describes, a general caption below a
specific one.
"""
from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandHelp:
    """The texts of one command's ``--help``."""

    summary: str
    description: str
    examples: tuple[str, ...]


COMMANDS: dict[str, CommandHelp] = {
    "demo": CommandHelp(
        "generate the shapes world, train the order and symmetric models on it, compare them",
        "Generate the shapes world (scenes of one to three coloured shapes rendered as small images, five "
        "captions each from general to specific), train the order model and the symmetric baseline from the "
        "pixels, and print both models' retrieval figures, the hierarchy check (how often a model places a "
        "general caption below a specific caption of the same scene) and precision@10. Nothing is downloaded. "
        "It prints where the run folders are, for evaluate, serve and index. --quick is a small version.",
        ("order-embedding demo --quick", "order-embedding demo --out demo --json demo.json"),
    ),
    "prepare": CommandHelp(
        "write caption and image lists per split from a Karpathy dataset_*.json",
        "Read Karpathy's dataset_{coco,flickr8k,flickr30k}.json and write a data folder: {split}.txt (one caption "
        "per line), {split}_images.txt (image paths) and, when images have different numbers of captions, "
        "{split}_cap2img.txt, for train (restval included), dev (val) and test. Image files missing on disk are "
        "listed in missing_images.txt. Next: extract-features, or train from the pixels.",
        ("order-embedding prepare dataset_coco.json --images /data/coco --out data/coco --five",),
    ),
    "extract_features": CommandHelp(
        "compute CNN features of the images of a prepared data folder",
        "Run a torchvision CNN (or an open_clip model) over the images listed by prepare and write "
        "images/{10crop|1crop|NAME}/{split}.npy: one L2-normalised row per image, averaged over 10 crops (the "
        "corners, the centre and their mirrors) or the centre crop alone. A stopped run resumes where it "
        "stopped when given the same command. Needs the 'vision' extra.",
        ("order-embedding extract-features data/coco --cnn vgg19 --crops 10",
         "order-embedding extract-features data/coco --cnn resnet152 --crops 1"),
    ),
    "train": CommandHelp(
        "train a caption-image model (order or symmetric)",
        "Train a caption-image retrieval model with the original's hyperparameter names: every option below is "
        "a keyword of order_embedding.train.trainer too. --preset order (the default) or symmetric chooses the "
        "paper's two models. The run folder SAVE_DIR/NAME receives config.json, vocab.json, metrics.jsonl and "
        "safetensors checkpoints; the best parameters on dev are kept. Booleans take true/false (or 1/0, "
        "yes/no); null leaves an optional value unset; --resume true continues a stopped run.",
        ("order-embedding train --preset order --data data/coco --name order",
         "order-embedding train --preset symmetric --data data/coco --name symmetric",
         "order-embedding train --preset order --data data/coco --name order --resume true"),
    ),
    "evaluate": CommandHelp(
        "print the retrieval metrics of trained models",
        "Encode a split's captions and images with each model and print caption retrieval (image to text) and "
        "image retrieval (text to image): R@1, R@5, R@10, median and mean rank, as in the paper's tables. By "
        "default the test split in folds of 1,000 images, averaged (COCO 1K); --full scores the whole split at "
        "once (COCO 5K). A RUN is a run folder or an original snapshot prefix.",
        ("order-embedding evaluate runs/order runs/symmetric",
         "order-embedding evaluate runs/order --full --json metrics.json"),
    ),
    "encode": CommandHelp(
        "embed captions, image features or image files into a model's space",
        "Write the embeddings of a caption file (one pre-tokenised sentence per line, streamed, so a file of any "
        "size fits in bounded memory), of an .npy of CNN features, or, for a model trained from pixels, of a "
        "list of image files, to an .npy file with one row per input.",
        ("order-embedding encode runs/order --captions captions.txt --out captions.npy",
         "order-embedding encode runs/order --features features.npy --out images.npy"),
    ),
    "convert_legacy": CommandHelp(
        "convert an original Theano snapshot (PREFIX.pkl + PREFIX.npz) into a run folder",
        "Read a snapshot pair published with the original code (PREFIX.pkl and PREFIX.npz, e.g. snapshots/order) "
        "without running any pickled code, and write it as a run folder of this project (safetensors and "
        "JSON), which evaluate, encode, index and serve read like any other.",
        ("order-embedding convert-legacy snapshots/order runs/order-original",),
    ),
    "index": CommandHelp(
        "build or search an on-disk image index",
        "Embed a collection of images once into an index folder on disk, then search it with sentences: "
        "exactly (streamed in blocks, with bounded memory) or, for an index built with --ann, through FAISS "
        "candidates re-ranked exactly.",
        ("order-embedding index build runs/order features.npy --out index",
         'order-embedding index search index "a dog on a beach" -k 10'),
    ),
    "index build": CommandHelp(
        "encode images into an index folder",
        "Encode images with a run's model and store the embeddings in a new index folder (embeddings.npy and "
        "index.json; for an order model also 7-bit lower bounds that let search skip most images exactly). The "
        "images are an .npy of CNN features, a list of image files (--images, for a model trained from "
        "pixels), or a split of a data set (--split).",
        ("order-embedding index build runs/order features.npy --out index",
         "order-embedding index build demo/runs/order --split test --out demo/index"),
    ),
    "index search": CommandHelp(
        "the best images of an index for one or more sentences",
        "Print, for each query sentence, the k images of the index with the lowest error (for the order model: "
        "the images the sentence lies most nearly below). The search is exact unless --approximate.",
        ('order-embedding index search index "a dog on a beach" -k 10',
         "order-embedding index search index --queries queries.txt --json"),
    ),
    "serve": CommandHelp(
        "start the web app: runs, results, curves, comparisons, result browser, search, pair probe",
        "Serve a web app over the run folders under RUNS_DIR, read live as they are written: the runs with their "
        "kind, status and every option; each run's recorded results with their baselines; training and recall "
        "curves; two or more runs compared side by side; a browser of each query's top 10 with every true match "
        "marked where the data says; a search box; and a probe giving E(a, b) and E(b, a) for two sentences. It "
        "listens on 127.0.0.1 unless --host says otherwise, and writes nothing. Needs the 'serve' extra.",
        ("order-embedding serve demo/runs --images demo/data",),
    ),
    "hypernym": CommandHelp(
        "WordNet hypernym completion: order-embeddings against a symmetric variant and the transitive closure",
        "Read the WordNet 3.0 noun hierarchy, split the transitive closure of its hypernym edges into train, dev "
        "and test with random negatives, train order-embeddings (a hypernym lies below its hyponyms) and a "
        "symmetric (cosine) variant, and print their test accuracy at the threshold chosen on dev, beside the "
        "transitive-closure baseline. --protocol ganea scores the same models by F1 on the split of Ganea et al. "
        "(2018), --protocol reconstruction by the mean rank and MAP of the closure (Nickel and Kiela, 2017). The "
        "WordNet files come from Debian's wordnet-base or NLTK's wordnet corpus.",
        ("order-embedding hypernym --seed 0 --json hypernym-s0.json",
         "order-embedding hypernym --root mammal.n.01 --dev-size 500 --test-size 500",
         "order-embedding hypernym --protocol ganea --percent 50 --dim 5"),
    ),
    "entailment": CommandHelp(
        "textual entailment on SNLI or a generated corpus: order-embeddings against baselines",
        "Train the order model (a hypothesis lies below the premises that entail it) and its symmetric (cosine) "
        "variant on premise-hypothesis pairs, entailment against neutral and contradiction; choose each "
        "model's threshold on dev and print test accuracy beside a majority-class and a word-overlap baseline. "
        "Without --snli, a corpus generated from the shapes world's caption grammar is used.",
        ("order-embedding entailment --quick", "order-embedding entailment --snli snli_1.0 --name snli"),
    ),
}


def parser_texts(command: str) -> dict:
    """Keyword arguments of ``add_parser`` for ``command``: summary, wrapped description, examples."""
    h = COMMANDS[command]
    return {
        "help": h.summary,
        "description": textwrap.fill(h.description, 88),
        "epilog": "example" + ("s" if len(h.examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in h.examples),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
