"""Council case-system flat files (SWIFT-style nightly exports) -> canonical
register changes. Pure: no I/O beyond the bytes given. See README.md here for
the published layouts councils implement."""

from adapters.council_files.layouts import LAYOUTS, SWIFT_CSV, SWIFT_FIXED, Column, Layout
from adapters.council_files.mapping import FileMapping, FileProblem, FileStream, MappedRow, column_for, map_file, open_file

__all__ = ["LAYOUTS", "SWIFT_CSV", "SWIFT_FIXED", "Column", "FileMapping", "FileProblem", "Layout", "FileStream", "MappedRow",
           "column_for", "map_file", "open_file"]
