"""Import files -> rows: pure parsing of the whole file first, then one atomic bulk write.

    formats.py   the three formats (hh, pairs, responses): lines -> ParsedFile, no database
    values.py    the checks on single values (prompts, texts, metadata, ids)
    pairing.py   which pairs of responses become comparisons, and which side is A
    bulk.py      the bulk writer: COPY / executemany with ids allocated up front
    pipelining.py  parse_ahead: the rest of a big file parsed in a forked child while this process writes
    importer.py  import_pairs: parse, match what is already stored, write the rest

Callers use the names below: `from labeling import importing;
importing.import_pairs(...)`.
"""

from .formats import FORMATS, HH_SOURCE, LABELS, ImportFileError, LabeledPair, parse_labeled_pairs
from .importer import ImportResult, import_pairs
from .pairing import spread_pairs
from .values import ROLES

__all__ = [
    "FORMATS",
    "HH_SOURCE",
    "LABELS",
    "ROLES",
    "ImportFileError",
    "ImportResult",
    "LabeledPair",
    "import_pairs",
    "parse_labeled_pairs",
    "spread_pairs",
]
