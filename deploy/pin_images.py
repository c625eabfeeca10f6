"""Pin each Dockerfile's base image by digest, so a rebuild gets the very same base.

    python deploy/pin_images.py                 # rewrites deploy/Dockerfile, deploy/Dockerfile.gpu
    python deploy/pin_images.py --check         # exit 1 while a base image is not pinned

`FROM IMAGE:TAG` becomes `FROM IMAGE:TAG@sha256:...`: the tag stays for the reader, the digest
decides. The digest is the one the registry serves for the tag now (the multi-platform index),
read with `docker buildx imagetools inspect`; run it where the registry is reachable, review the
diff, commit. `${ARG}`s in a FROM line are expanded from the file's `ARG` defaults first.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCKERFILES = [HERE / "Dockerfile", HERE / "Dockerfile.gpu"]
FROM = re.compile(r"^FROM\s+(?P<image>\S+)(?P<rest>.*)$", re.MULTILINE)


def base_images(text: str) -> list[tuple[str, str]]:
    """(as written, expanded) for each FROM line's image."""
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    expand = lambda image: re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)  # noqa: E731
    return [(m.group("image"), expand(m.group("image"))) for m in FROM.finditer(text)]


def digest(image: str) -> str:
    command = [
        "docker",
        "buildx",
        "imagetools",
        "inspect",
        image,
        "--format",
        "{{.Manifest.Digest}}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit(
            "no `docker` on PATH: install Docker 23+ (with buildx) where the registry is reachable"
        )
    found = done.stdout.strip()
    if done.returncode != 0 or not re.fullmatch(r"sha256:[0-9a-f]{64}", found):
        sys.exit(f"cannot read the digest of {image}: {done.stderr.strip() or found}")
    return found


def pin(path: Path) -> bool:
    """Pin ``path``'s unpinned base images; True when it changed."""
    text = path.read_text()
    pinned = text
    for written, expanded in base_images(text):
        if "@sha256:" not in written:
            pinned = pinned.replace(f"FROM {written}", f"FROM {expanded}@{digest(expanded)}", 1)
    if pinned != text:
        path.write_text(pinned)
    return pinned != text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="Only say which are not pinned.")
    parser.add_argument("dockerfiles", nargs="*", type=Path, default=DOCKERFILES)
    args = parser.parse_args()
    missing = [str(path) for path in args.dockerfiles if not path.is_file()]
    if missing:
        parser.error(f"no such Dockerfile: {', '.join(missing)}")
    if args.check:
        loose = [
            f"{path.name}: {written}"
            for path in args.dockerfiles
            for written, _ in base_images(path.read_text())
            if "@sha256:" not in written
        ]
        print("\n".join(loose) or "every base image is pinned by digest")
        return 1 if loose else 0
    for path in args.dockerfiles:
        print(f"{path}: {'pinned' if pin(path) else 'already pinned'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
