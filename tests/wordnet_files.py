"""Writes small WordNet databases (``data.noun`` + ``index.noun`` in the wndb(5) format) for tests."""
from __future__ import annotations

from pathlib import Path

LICENSE = [
    "  1 This software and database is being provided to you, the LICENSEE, by  ",
    "  2 Princeton University under the following license.  ",
    "  3   ",
]


def write_wordnet(folder: Path, synsets: list[tuple[list[str], list[tuple[str, int]]]]) -> list[int]:
    """Write ``synsets`` (words, pointers as (symbol, target synset position)) and return their offsets.

    Every synset line also carries a derivation pointer to a verb, which readers must ignore.
    """
    folder.mkdir(parents=True, exist_ok=True)
    header = "".join(line + "\n" for line in LICENSE)

    def line(k: int, offsets: list[int]) -> str:
        words, pointers = synsets[k]
        ptrs = [f"{sym} {offsets[t]:08d} n 0000" for sym, t in pointers] + ["+ 00012345 v 0101"]
        w = " ".join(f"{word} 0" for word in words)
        return f"{offsets[k]:08d} 03 n {len(words):02x} {w} {len(ptrs):03d} {' '.join(ptrs)} | gloss of {words[0]}  \n"

    # Offsets are fixed-width, so line lengths do not depend on their values.
    lengths = [len(line(k, [0] * len(synsets))) for k in range(len(synsets))]
    offsets, pos = [], len(header)
    for n in lengths:
        offsets.append(pos)
        pos += n
    (folder / "data.noun").write_text(header + "".join(line(k, offsets) for k in range(len(synsets))))
    senses: dict[str, list[int]] = {}
    for k, (words, _) in enumerate(synsets):
        for word in words:
            senses.setdefault(word.lower(), []).append(offsets[k])
    index = "".join(f"{lemma} n {len(offs)} 1 @ {len(offs)} 0 {' '.join(f'{o:08d}' for o in offs)}  \n"
                    for lemma, offs in sorted(senses.items()))
    (folder / "index.noun").write_text(header + index)
    return offsets


#: A hand-made hierarchy: (words, pointers). "dog" has two senses; Fido is an instance.
TINY = [
    (["entity"], [("~", 1), ("~", 6)]),  # 0
    (["animal", "beast"], [("@", 0), ("~", 2)]),  # 1
    (["mammal"], [("@", 1)]),  # 2
    (["dog", "domestic_dog"], [("@", 2), ("@", 4)]),  # 3
    (["pet"], [("@", 1)]),  # 4
    (["Fido"], [("@i", 3)]),  # 5
    (["plant"], [("@", 0)]),  # 6
    (["tree"], [("@", 6), ("#m", 6)]),  # 7
    (["frump", "dog"], [("@", 0)]),  # 8
]

TINY_NAMES = ["entity.n.01", "animal.n.01", "mammal.n.01", "dog.n.01", "pet.n.01", "fido.n.01",
              "plant.n.01", "tree.n.01", "frump.n.01"]

#: Direct edges (hyponym position, hypernym position) of TINY.
TINY_EDGES = {(1, 0), (2, 1), (3, 2), (3, 4), (4, 1), (5, 3), (6, 0), (7, 6), (8, 0)}

#: Its transitive closure, worked out by hand.
TINY_CLOSURE = TINY_EDGES | {
    (2, 0), (3, 1), (3, 0), (4, 0), (5, 2), (5, 4), (5, 1), (5, 0), (7, 0),
}
