"""The .clip archive format (docs/FORMAT.md): its constants (`format`), the writer
(compiled `_writer` or twin `_writer_py`, chosen by `writer`), and the reader (`reader`, with
node blocks decoded by `nodeblock`, and file contents read lazily by `files`)."""
