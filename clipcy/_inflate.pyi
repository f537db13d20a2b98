"""Type stub of the compiled clipcy._inflate (the inflate engine behind clipcy._checkpoint)."""

NAME: str  # "zlib-ng" or "zlib"
VERSION: str

def engine() -> str: ...
