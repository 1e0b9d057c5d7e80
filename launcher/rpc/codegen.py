"""Generate the Python stubs of proto/rankitect/v1/*.proto into launcher/rpc/gen.

`python -m launcher.rpc.codegen` (or `make proto`) rewrites the committed stubs; the test
tests/test_rpc_stubs.py regenerates into a temporary folder and fails when they differ.

protoc names a generated module after its proto path (`rankitect.v1.registry_pb2`), which
would resolve to the core `rankitect` package; the imports between the stubs are rewritten to
`launcher.rpc.gen`, where they are written flat.
"""

from __future__ import annotations

import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
PROTO_PACKAGE = "rankitect/v1"
GEN_DIR = Path(__file__).resolve().parent / "gen"
GEN_PACKAGE = "launcher.rpc.gen"
HEADER = "# ruff: noqa\n# Generated from proto/{proto} by launcher/rpc/codegen.py; do not edit.\n"
_STUB = re.compile(r"_pb2(_grpc)?\.pyi?$")
_IMPORT = re.compile(r"^from rankitect\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    """The .proto files of the package, relative to PROTO_ROOT."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generated_names(directory: Path) -> list[str]:
    """The stub files in `directory` (its hand-written __init__.py left out)."""
    return sorted(p.name for p in directory.iterdir()
                  if p.is_file() and _STUB.search(p.name))


def generate(out_dir: Path) -> list[Path]:
    """Write the stubs of every proto file into `out_dir`; returns the files written.

    Raises RuntimeError with protoc's exit code when a proto file does not compile.
    """
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    files = [str(p) for p in proto_files()]
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
                            f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *files])
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {files}")
        for path in sorted((Path(tmp) / PROTO_PACKAGE).iterdir()):
            proto = f"{PROTO_PACKAGE}/{_STUB.sub('.proto', path.name)}"
            text = HEADER.format(proto=proto) + _IMPORT.sub(f"from {GEN_PACKAGE} import ", path.read_text())
            target = out_dir / path.name
            target.write_text(text)
            written.append(target)
    return written


def main() -> int:
    stale = set(generated_names(GEN_DIR)) if GEN_DIR.is_dir() else set()
    written = generate(GEN_DIR)
    for name in stale - {p.name for p in written}:
        (GEN_DIR / name).unlink()
    print(f"wrote {len(written)} files to {GEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
