"""WordNet 3.0 nouns as a hypernym graph, its transitive closure and the completion data set.

The graph is read from the WordNet database files ``data.noun`` and ``index.noun``
(format in wndb(5); Debian's ``wordnet-base`` installs them in ``/usr/share/wordnet``,
NLTK's ``wordnet`` corpus folder holds the same files). Nodes are the noun synsets,
named as NLTK names them (``mammal.n.01``: first lemma, lower case, and its sense
number for that lemma); edges point from a synset to its hypernyms and instance
hypernyms (pointers ``@`` and ``@i``).

The completion data set follows the order-embeddings paper: the transitive closure of
the edges, shuffled, gives ``test_size`` test edges, ``dev_size`` dev edges and the rest
for training; negatives copy a positive edge and replace one of its two ends, chosen at
random, by a random synset.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import runs

#: Where Debian's ``wordnet-base`` package installs the database files.
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"

#: How to obtain the data, appended to every error about missing or malformed files.
DATA_HELP = (
    "install WordNet 3.0 with 'apt-get install wordnet-base' (files in /usr/share/wordnet), "
    "or use NLTK's wordnet corpus folder (python -m nltk.downloader wordnet) "
    "or the 'dict' folder of https://wordnet.princeton.edu/download, and pass --wordnet DIR"
)

#: Pointer symbols followed: hypernym and instance hypernym.
HYPERNYM_POINTERS = frozenset({"@", "@i"})


class WordNetError(ValueError):
    """The WordNet folder or one of its files is missing, unreadable or not in the database format."""


@dataclass(frozen=True)
class NounGraph:
    """Noun synsets and their direct hypernym edges.

    ``offsets[k]`` is the ``data.noun`` byte offset of node ``k`` (ascending), ``names[k]``
    its NLTK-style name, and each row ``(a, b)`` of ``edges`` says that node ``b`` is a
    hypernym or instance hypernym of node ``a`` (rows unique, sorted).
    """

    offsets: np.ndarray
    names: list[str]
    edges: np.ndarray

    @property
    def n_nodes(self) -> int:
        """Number of synsets."""
        return len(self.names)

    def node(self, key: str) -> int:
        """Index of a synset given by its NLTK-style name (``mammal.n.01``) or its 8-digit offset."""
        if key.isdigit():
            k = int(np.searchsorted(self.offsets, int(key)))
            if k < len(self.offsets) and self.offsets[k] == int(key):
                return k
        else:
            try:
                return self.names.index(key)
            except ValueError:
                pass
        raise ValueError(f"no noun synset {key!r} in this WordNet (give a name such as 'mammal.n.01' or an offset)")

    def descendants(self, root: str) -> NounGraph:
        """The subgraph of ``root`` and every synset below it, with the edges among them."""
        r = self.node(root)
        children: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for a, b in self.edges.tolist():
            children[b].append(a)
        keep = np.zeros(self.n_nodes, dtype=bool)
        keep[r] = True
        stack = [r]
        while stack:
            for c in children[stack.pop()]:
                if not keep[c]:
                    keep[c] = True
                    stack.append(c)
        new_index = np.cumsum(keep) - 1
        inside = keep[self.edges[:, 0]] & keep[self.edges[:, 1]]
        return NounGraph(
            offsets=self.offsets[keep],
            names=[n for n, k in zip(self.names, keep) if k],
            edges=new_index[self.edges[inside]],
        )


def _format_error(path: Path, lineno: int, reason: str) -> WordNetError:
    return WordNetError(f"{path}:{lineno}: not in the WordNet database format (wndb(5)): {reason}; {DATA_HELP}")


#: Largest WordNet file read (WordNet 3.0's data.noun has 15 MB).
MAX_WORDNET_BYTES = 2**28


def _read_lines(path: Path) -> list[bytes]:
    """The lines of a regular file of at most :data:`MAX_WORDNET_BYTES`, each with its end (byte offsets count)."""
    try:
        return runs.read_regular(path, MAX_WORDNET_BYTES).splitlines(keepends=True)
    except runs.RunError as e:
        raise WordNetError(f"{e}; {DATA_HELP}") from None


def parse_data_noun(path: str | os.PathLike) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Read ``data.noun``: synset offsets (ascending), each synset's first word, and the
    ``@``/``@i`` pointer pairs ``(offset, hypernym offset)`` (possibly repeated)."""
    path = Path(path)
    offsets: list[int] = []
    first_words: list[str] = []
    pairs: list[tuple[int, int]] = []
    position = 0
    for lineno, raw in enumerate(_read_lines(path), start=1):
        start, position = position, position + len(raw)
        if raw.startswith(b"  "):  # licence header lines begin with two spaces
            continue
        line = raw.decode("latin-1").rstrip("\r\n")
        head, bar, _gloss = line.partition("|")
        f = head.split()
        try:
            if not f or len(f[0]) != 8 or not f[0].isdigit():
                raise ValueError("the line does not start with an 8-digit synset offset")
            if not bar or len(f) < 4:
                raise ValueError("expected 'offset lex_filenum ss_type w_cnt words... p_cnt pointers... | gloss'")
            offset = int(f[0])
            if offset != start:
                raise ValueError(f"synset offset {f[0]} is not the line's byte offset {start}")
            if f[2] != "n":
                raise ValueError(f"synset type {f[2]!r} is not a noun ('n')")
            w_cnt = int(f[3], 16)
            p_at = 4 + 2 * w_cnt
            if w_cnt < 1 or len(f) <= p_at:
                raise ValueError(f"word count {f[3]} does not match the fields")
            if len(f[p_at]) != 3:
                raise ValueError(f"pointer count {f[p_at]!r} is not 3 digits (word count {f[3]} wrong?)")
            p_cnt = int(f[p_at])
            if len(f) != p_at + 1 + 4 * p_cnt:
                raise ValueError(f"pointer count {f[p_at]} does not match the fields")
        except ValueError as e:
            raise _format_error(path, lineno, str(e)) from None
        offsets.append(offset)
        first_words.append(f[4])
        for k in range(p_at + 1, len(f), 4):
            if f[k] in HYPERNYM_POINTERS:
                if f[k + 2] != "n" or len(f[k + 1]) != 8 or not f[k + 1].isdigit():
                    raise _format_error(path, lineno, f"hypernym pointer to {f[k + 1]} {f[k + 2]} is not a noun offset")
                pairs.append((offset, int(f[k + 1])))
    if not offsets:
        raise WordNetError(f"{path}: no synsets found, not a WordNet data.noun file; {DATA_HELP}")
    return np.asarray(offsets, dtype=np.int64), first_words, np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def parse_index_noun(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read ``index.noun``: each lemma's synset offsets in sense order (sense 1 first)."""
    path = Path(path)
    senses: dict[str, list[int]] = {}
    for lineno, raw in enumerate(_read_lines(path), start=1):
        if raw.startswith(b"  "):
            continue
        f = raw.decode("latin-1").split()
        try:
            if len(f) < 6 or f[1] != "n":
                raise ValueError("expected 'lemma n synset_cnt p_cnt ...' for a noun")
            synset_cnt, p_cnt = int(f[2]), int(f[3])
            at = 4 + p_cnt + 2
            if synset_cnt < 1 or len(f) != at + synset_cnt:
                raise ValueError(f"synset count {f[2]} does not match the fields")
            offs = [int(x) for x in f[at:]]
        except ValueError as e:
            raise _format_error(path, lineno, str(e)) from None
        senses[f[0]] = offs
    if not senses:
        raise WordNetError(f"{path}: no lemmas found, not a WordNet index.noun file; {DATA_HELP}")
    return senses


def find_wordnet_dir(directory: str | os.PathLike | None = None) -> Path:
    """The folder holding ``data.noun`` (``directory`` itself or its ``dict`` subfolder)."""
    d = Path(directory if directory is not None else DEFAULT_WORDNET_DIR)
    if not d.exists():
        raise WordNetError(f"WordNet folder {d} not found; {DATA_HELP}")
    if not d.is_dir():
        raise WordNetError(f"WordNet path {d} is not a folder; {DATA_HELP}")
    if not (d / "data.noun").exists() and (d / "dict" / "data.noun").exists():
        d = d / "dict"
    if not (d / "data.noun").exists():
        raise WordNetError(f"WordNet folder {d} has no data.noun; {DATA_HELP}")
    return d


def read_wordnet(directory: str | os.PathLike | None = None) -> NounGraph:
    """Read the WordNet noun hypernym graph from a database folder (default ``/usr/share/wordnet``)."""
    d = find_wordnet_dir(directory)
    offsets, first_words, pairs = parse_data_noun(d / "data.noun")
    senses = parse_index_noun(d / "index.noun")
    order = np.argsort(offsets, kind="stable")
    offsets = offsets[order]
    if np.any(offsets[1:] == offsets[:-1]):
        raise WordNetError(f"{d / 'data.noun'}: a synset offset occurs twice; {DATA_HELP}")
    names = []
    for offset, k in zip(offsets.tolist(), order.tolist()):
        lemma = first_words[k].lower()
        try:
            sense = senses[lemma].index(offset) + 1
        except (KeyError, ValueError):
            raise WordNetError(f"{d / 'index.noun'}: lemma {lemma!r} lacks synset {offset:08d} of data.noun; {DATA_HELP}") from None
        names.append(f"{lemma}.n.{sense:02d}")
    index = np.searchsorted(offsets, pairs)
    found = (index < len(offsets)) & (offsets[np.minimum(index, len(offsets) - 1)] == pairs)
    if not found.all():
        a, b = pairs[np.argmin(found.all(axis=1))]
        raise WordNetError(f"{d / 'data.noun'}: synset {a:08d} points to missing synset {b:08d}; {DATA_HELP}")
    edges = np.unique(index, axis=0) if len(index) else index
    return NounGraph(offsets=offsets, names=names, edges=edges.astype(np.int64))


def transitive_closure(edges: np.ndarray, n_nodes: int) -> np.ndarray:
    """All pairs ``(a, c)`` such that a path of edges leads from ``a`` to ``c`` (rows unique, sorted).

    ``edges`` rows are ``(a, b)`` with ``b`` above ``a``; the graph must be acyclic.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    parents: list[list[int]] = [[] for _ in range(n_nodes)]
    children: list[list[int]] = [[] for _ in range(n_nodes)]
    for a, b in np.unique(edges, axis=0).tolist():
        parents[a].append(b)
        children[b].append(a)
    waiting = [len(p) for p in parents]
    ready = [v for v in range(n_nodes) if not waiting[v]]
    above: list[set[int] | None] = [None] * n_nodes
    done = 0
    while ready:
        v = ready.pop()
        done += 1
        s: set[int] = set(parents[v])
        for p in parents[v]:
            s |= above[p]  # type: ignore[arg-type]
        above[v] = s
        for c in children[v]:
            waiting[c] -= 1
            if not waiting[c]:
                ready.append(c)
    if done != n_nodes:
        raise ValueError(f"the hypernym graph has a cycle through {n_nodes - done} synsets; no closure exists")
    counts = np.fromiter((len(s) for s in above), dtype=np.int64, count=n_nodes)  # type: ignore[arg-type]
    lower = np.repeat(np.arange(n_nodes, dtype=np.int64), counts)
    upper = np.fromiter(itertools.chain.from_iterable(sorted(s) for s in above), dtype=np.int64, count=int(counts.sum()))  # type: ignore[arg-type]
    return np.stack([lower, upper], axis=1)


def edge_keys(edges: np.ndarray, n_nodes: int) -> np.ndarray:
    """One int64 key per edge row, ``a * n_nodes + b``, for membership tests."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    return edges[:, 0] * n_nodes + edges[:, 1]


def contains_edges(known: np.ndarray, queries: np.ndarray, n_nodes: int) -> np.ndarray:
    """Boolean mask: which rows of ``queries`` are rows of ``known``."""
    return np.isin(edge_keys(queries, n_nodes), edge_keys(known, n_nodes))


def corrupt_edges(
    edges: np.ndarray, n_nodes: int, rng: np.random.Generator, exclude: np.ndarray | None = None, rounds: int = 100
) -> np.ndarray:
    """Negatives: a copy of each edge with one end, chosen at random, replaced by a random node.

    With ``exclude`` (edge rows), a negative that is one of those edges is drawn again, up to
    ``rounds`` times.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    negatives = edges.copy()
    redo = np.arange(len(edges))
    known = None if exclude is None else np.unique(edge_keys(exclude, n_nodes))
    for _ in range(rounds if known is not None else 1):
        negatives[redo] = edges[redo]
        end = rng.integers(0, 2, size=len(redo))
        negatives[redo, end] = rng.integers(0, n_nodes, size=len(redo))
        if known is None:
            break
        keys = edge_keys(negatives[redo], n_nodes)
        at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
        redo = redo[known[at] == keys]
        if not len(redo):
            break
    return negatives


@dataclass(frozen=True)
class HypernymDataset:
    """The completion task: closure edges split into train/dev/test, fixed dev and test negatives."""

    graph: NounGraph
    closure: np.ndarray
    train: np.ndarray
    dev: np.ndarray
    test: np.ndarray
    dev_negatives: np.ndarray
    test_negatives: np.ndarray
    seed: int


def build_dataset(graph: NounGraph, seed: int, dev_size: int = 4000, test_size: int = 4000) -> HypernymDataset:
    """Shuffle the closure with ``seed``: first ``test_size`` edges test, next ``dev_size`` dev, rest train."""
    if dev_size < 1 or test_size < 1:
        raise ValueError(f"dev and test sizes must be positive (got {dev_size}, {test_size})")
    closure = transitive_closure(graph.edges, graph.n_nodes)
    if len(closure) <= dev_size + test_size:
        raise ValueError(
            f"the closure has {len(closure)} edges, too few for {test_size} test and {dev_size} dev edges and a training set"
        )
    split_rng, negative_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    shuffled = closure[split_rng.permutation(len(closure))]
    test, dev, train = shuffled[:test_size], shuffled[test_size : test_size + dev_size], shuffled[test_size + dev_size :]
    return HypernymDataset(
        graph=graph,
        closure=closure,
        train=train,
        dev=dev,
        test=test,
        dev_negatives=corrupt_edges(dev, graph.n_nodes, negative_rng),
        test_negatives=corrupt_edges(test, graph.n_nodes, negative_rng),
        seed=seed,
    )


# ---------------------------------------------------------------- the protocol of Ganea et al. (2018)

#: Percentages of the non-basic edges the Ganea et al. protocol adds to the training edges.
GANEA_PERCENTS = (0, 10, 25, 50, 90)
#: Percent of the non-basic edges held out for validation, and for test (Ganea et al.'s split_wordnet_data.py).
GANEA_HELD_OUT_PERCENT = 5
#: Negatives drawn per held-out edge for each of its two ends (their split_wordnet_data.py: 5 and 5).
GANEA_NEGATIVES_PER_END = 5


def without_root(graph: NounGraph, root: str | None = None) -> NounGraph:
    """The synsets below ``root`` (default: the one synset without hypernyms, ``entity.n.01``) that keep an
    edge once the root is removed, and their edges.

    Every closure edge into the root is trivially true, so Ganea et al. leave the root out; their
    vocabulary holds the synsets of the remaining edges (a synset whose only edge led to the root goes too).
    """
    if root is None:
        tops = np.setdiff1d(np.arange(graph.n_nodes), graph.edges[:, 0])
        if len(tops) != 1:
            raise ValueError(f"the hierarchy has {len(tops)} synsets without hypernyms; name the root with --root")
        root = graph.names[int(tops[0])]
    sub = graph.descendants(root)
    r = sub.node(root)
    edges = sub.edges[(sub.edges != r).all(axis=1)]
    keep = np.zeros(sub.n_nodes, dtype=bool)
    keep[edges.ravel()] = True
    new_index = np.cumsum(keep) - 1
    return NounGraph(offsets=sub.offsets[keep], names=[n for n, k in zip(sub.names, keep) if k],
                     edges=new_index[edges])


def transitive_reduction(closure: np.ndarray, n_nodes: int) -> np.ndarray:
    """The basic edges: closure rows ``(a, c)`` with no node ``b`` such that ``(a, b)`` and ``(b, c)`` are closure rows.

    ``closure`` must be transitively closed (as :func:`transitive_closure` returns it); rows unique, sorted.
    A path of two or more edges from ``a`` to ``c`` passes through some ``b`` above ``a``, so ``(a, c)`` is basic
    exactly when ``c`` lies above no other node above ``a``.
    """
    closure = np.unique(np.asarray(closure, dtype=np.int64).reshape(-1, 2), axis=0)
    starts = np.searchsorted(closure[:, 0], np.arange(n_nodes + 1))
    above = [closure[starts[a]:starts[a + 1], 1] for a in range(n_nodes)]
    basic = []
    for a in range(n_nodes):
        ups = above[a]
        if not len(ups):
            continue
        implied = np.concatenate([above[b] for b in ups.tolist()])
        basic.append(np.stack([np.full(len(ups), a), ups], axis=1)[~np.isin(ups, implied)])
    return np.concatenate(basic) if basic else np.zeros((0, 2), dtype=np.int64)


def _draw_ends(kept: np.ndarray, keep_first: bool, closure_keys: np.ndarray, n_nodes: int, k: int,
               rng: np.random.Generator, rounds: int = 64) -> np.ndarray:
    """``k`` distinct nodes ``x`` per kept node ``y``, each making no closure row and not ``y`` itself: rows
    ``(y, x)`` when ``keep_first`` else ``(x, y)``. Returns ``len(kept) x k`` nodes."""
    out = np.full((len(kept), k), -1, dtype=np.int64)

    def allowed(rows: np.ndarray, cand: np.ndarray, slot: int) -> np.ndarray:
        pairs = np.stack([kept[rows], cand], 1) if keep_first else np.stack([cand, kept[rows]], 1)
        keys = edge_keys(pairs, n_nodes)
        at = np.minimum(np.searchsorted(closure_keys, keys), len(closure_keys) - 1)
        return (closure_keys[at] != keys) & (cand != kept[rows]) & ~(out[rows, :slot] == cand[:, None]).any(1)

    for slot in range(k):
        rows = np.arange(len(kept))
        for _ in range(rounds):
            cand = rng.integers(0, n_nodes, size=len(rows))
            ok = allowed(rows, cand, slot)
            out[rows[ok], slot] = cand[ok]
            rows = rows[~ok]
            if not len(rows):
                break
        for r in rows.tolist():  # the few kept nodes related to nearly every node: draw from the allowed set
            every = np.arange(n_nodes)
            choices = every[allowed(np.full(n_nodes, r), every, slot)]
            if not len(choices):
                raise ValueError(f"node {int(kept[r])} has fewer than {k} nodes it is unrelated to; too small a graph")
            out[r, slot] = rng.choice(choices)
    return out


def ganea_negatives(positives: np.ndarray, closure: np.ndarray, n_nodes: int, rng: np.random.Generator,
                    per_end: int = GANEA_NEGATIVES_PER_END) -> np.ndarray:
    """Negatives of held-out edges as Ganea et al.'s ``split_wordnet_data.py`` draws them.

    For each positive row ``(hyponym a, hypernym b)``: ``per_end`` distinct rows ``(a', b)`` and ``per_end``
    distinct rows ``(a, b')``, uniform over the nodes that make no closure edge and differ from the kept end.
    The ``(a', b)`` rows are skipped when ``b`` lies above every other node (their code's root test).
    """
    positives = np.asarray(positives, dtype=np.int64).reshape(-1, 2)
    closure = np.asarray(closure, dtype=np.int64).reshape(-1, 2)
    keys = np.unique(edge_keys(closure, n_nodes))
    below = np.bincount(closure[:, 1], minlength=n_nodes)
    lower = positives[below[positives[:, 1]] < n_nodes - 1]
    hyponyms = _draw_ends(lower[:, 1], False, keys, n_nodes, per_end, rng)
    hypernyms = _draw_ends(positives[:, 0], True, keys, n_nodes, per_end, rng)
    return np.concatenate([
        np.stack([hyponyms.ravel(), np.repeat(lower[:, 1], per_end)], 1),
        np.stack([np.repeat(positives[:, 0], per_end), hypernyms.ravel()], 1),
    ])


@dataclass(frozen=True)
class GaneaSplit:
    """The Ganea et al. split: ``data`` (train, dev = their validation set, test, fixed negatives), with the
    basic edges (all in train) and the non-basic edges that training adds (``percent`` % of all of them)."""

    data: HypernymDataset
    basic: np.ndarray
    non_basic: np.ndarray
    train_non_basic: np.ndarray
    percent: int


def ganea_split(graph: NounGraph, percent: int, seed: int) -> GaneaSplit:
    """Split the closure of ``graph`` (root already removed, see :func:`without_root`) as Ganea et al. do.

    The basic edges are the transitive reduction of the closure; the others are non-basic. 5 % of the
    non-basic edges (rounded down) are test, another 5 % dev; training gets every basic edge and
    ``percent`` % of all non-basic edges, drawn from those left. Dev and test get
    :func:`ganea_negatives`. The seed fixes the split, so every ``percent`` shares one dev and test set
    and a larger ``percent`` trains on a superset.
    """
    if percent not in GANEA_PERCENTS:
        raise ValueError(f"percent must be one of {', '.join(map(str, GANEA_PERCENTS))} (got {percent})")
    closure = transitive_closure(graph.edges, graph.n_nodes)
    basic = transitive_reduction(closure, graph.n_nodes)
    non_basic = closure[~contains_edges(basic, closure, graph.n_nodes)]
    held_out = GANEA_HELD_OUT_PERCENT * len(non_basic) // 100
    if held_out < 1:
        raise ValueError(f"the closure has {len(non_basic)} non-basic edges, too few to hold out "
                         f"{GANEA_HELD_OUT_PERCENT} % for test and for dev")
    split_rng, dev_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    shuffled = non_basic[split_rng.permutation(len(non_basic))]
    test, dev = shuffled[:held_out], shuffled[held_out:2 * held_out]
    extra = shuffled[2 * held_out:][:percent * len(non_basic) // 100]
    data = HypernymDataset(
        graph=graph, closure=closure, train=np.concatenate([basic, extra]), dev=dev, test=test,
        dev_negatives=ganea_negatives(dev, closure, graph.n_nodes, dev_rng),
        test_negatives=ganea_negatives(test, closure, graph.n_nodes, test_rng), seed=seed,
    )
    return GaneaSplit(data=data, basic=basic, non_basic=non_basic, train_non_basic=extra, percent=percent)
