"""Type stub of the compiled clipcy.layers._inflate (the inflate engine behind _checkpoint)."""

NAME: str  # "zlib-ng" or "zlib"
VERSION: str

def engine() -> str: ...
