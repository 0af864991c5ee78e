"""The command line end to end on tiny data, and its one-line errors."""
import json

import numpy as np
import pytest

from order_embedding import runs
from order_embedding.cli import main


@pytest.fixture
def trained(tiny_data, tmp_path):
    code = main(["train", "--preset", "symmetric", "--data", str(tiny_data), "--save_dir", str(tmp_path / "runs"),
                 "--name", "sym", "--max_epochs", "2", "--dim", "12", "--dim_word", "8", "--dim_image", "16",
                 "--batch_size", "16", "--validFreq", "4", "--quiet"])
    assert code == 0
    return tmp_path / "runs" / "sym"


def test_train_evaluate_encode(trained, tiny_data, tmp_path, capsys):
    assert json.loads((trained / runs.CONFIG).read_text())["model"]["method"] == "cosine"
    out_json, ranks_json = tmp_path / "m.json", tmp_path / "r.json"
    assert main(["evaluate", str(trained), "--split", "test", "--json", str(out_json),
                 "--ranks-json", str(ranks_json)]) == 0
    printed = capsys.readouterr().out
    assert "caption retrieval (image -> text)" in printed and "symmetric" in printed
    result = json.loads(out_json.read_text())["symmetric"]
    assert set(result["t2i"]) == {"R@1", "R@5", "R@10", "medr", "meanr"}
    ranks = json.loads(ranks_json.read_text())
    assert len(ranks["t2i"]["ranks"]) == 100 and len(ranks["i2t"]["top10"]) == 20
    # The ranks file agrees with the printed recall: R@10 is the share of ranks below 10.
    assert result["t2i"]["R@10"] == pytest.approx(100 * np.mean(np.array(ranks["t2i"]["ranks"]) < 10), abs=0.01)

    caps = tmp_path / "caps.txt"
    caps.write_text("a red round thing\nblue tall\n")
    assert main(["encode", str(trained), "--captions", str(caps), "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (2, 12) and np.allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5)
    feats = np.load(tiny_data / "images" / "10crop" / "test.npy")
    assert main(["encode", str(trained), "--features", str(tiny_data / "images" / "10crop" / "test.npy"),
                 "--out", str(tmp_path / "im.npy")]) == 0
    assert np.load(tmp_path / "im.npy").shape == (len(feats), 12)


def one_line_error(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and pattern in err, err


def test_errors_are_one_line(trained, tiny_data, tmp_path, capsys):
    one_line_error(capsys, ["evaluate", str(trained), "--split", "nosuch"], "nosuch")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((3, 5), np.float32))
    one_line_error(capsys, ["encode", str(trained), "--features", str(bad), "--out", str(tmp_path / "o.npy")],
                   "5-dimensional, the model expects 16")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((2, 16), np.nan, np.float32))
    one_line_error(capsys, ["encode", str(trained), "--features", str(nan), "--out", str(tmp_path / "o.npy")],
                   "NaN or infinity")
    empty = tmp_path / "empty.txt"
    empty.write_text("a thing\n\nmore\n")
    one_line_error(capsys, ["encode", str(trained), "--captions", str(empty), "--out", str(tmp_path / "o.npy")],
                   "line 2 is empty")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok\ncaf\xe9\n")
    one_line_error(capsys, ["encode", str(trained), "--captions", str(latin), "--out", str(tmp_path / "o.npy")],
                   "line 2 is not UTF-8")
    ckpt = trained / runs.BEST
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    one_line_error(capsys, ["evaluate", str(trained)], "corrupt or truncated checkpoint")
    one_line_error(capsys, ["train", "--preset", "order", "--data", str(tmp_path / "nowhere"), "--quiet"], "nowhere")
    one_line_error(capsys, ["train", "--data", str(tiny_data), "--optimizer", "sgd", "--quiet"], "only 'adam'")
    (tiny_data / "dev.txt").write_text("one caption\n")
    one_line_error(capsys, ["train", "--data", str(tiny_data), "--save_dir", str(tmp_path / "r2"), "--quiet"], "dev")
