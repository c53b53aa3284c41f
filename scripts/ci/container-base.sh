#!/usr/bin/env bash
# Make a local stand-in for NVIDIA's NGC PyTorch base image, which the CI machine cannot
# pull: Debian bookworm (debootstrap) with its Python 3, and the suite's pinned torch,
# torchvision, DALI and their CUDA wheels copied from the CI's own venv, listed in
# /etc/pip/constraint.txt as NGC lists what it ships (container/pins.py reads that file).
# Like NGC's, its Python is marked externally managed (PEP 668); the recipe copes with it.
#
#   scripts/ci/container-base.sh VENV        prints the image name (podman), built once
#                                            per set of copied packages
set -euo pipefail
venv="$(cd "${1:?usage: container-base.sh VENV}" && pwd)"
cache=/var/cache/xferscale-ci
mkdir -p "$cache"

# What NGC provides that the suite pins: the CUDA stack and DALI, with everything they need.
packages=$("$venv/bin/python" - <<'PY'
import re
from importlib import metadata

# torch reaches its CUDA wheels through extras of cuda-toolkit: take every nvidia-*/cuda-* dist
roots = ["torch", "torchvision", "nvidia-dali-cuda130"] + [
    d.metadata["Name"] for d in metadata.distributions() if re.match(r"(nvidia|cuda)[-_]", d.metadata["Name"].lower())]
seen, todo = {}, list(roots)
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    seen[name] = dist.version
    for req in dist.requires or []:
        if "extra ==" in req:
            continue
        todo.append(re.match(r"[A-Za-z0-9._-]+", req).group(0))
print(" ".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PY
)
tag=$(echo "$packages" | sha256sum | cut -c1-12)
image="localhost/xferscale-ci-base:$tag"
if podman image exists "$image"; then
    echo "$image"
    exit 0
fi

debian="$cache/bookworm-python3.tar"  # the debootstrap, kept for the next base
if [[ ! -s $debian ]]; then
    echo "container-base: debootstrap bookworm (about 2 minutes)" >&2
    rm -rf "$cache/debootstrap"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$cache/debootstrap" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
        || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    tar -C "$cache/debootstrap" -cf "$debian.tmp" . && mv "$debian.tmp" "$debian"
    rm -rf "$cache/debootstrap"
fi
rootfs="$cache/rootfs-$tag"
rm -rf "$rootfs"
mkdir -p "$rootfs"
tar -C "$rootfs" -xf "$debian"

site="$rootfs/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site" "$rootfs/etc/pip"
echo "container-base: copying ${packages//==/ } from $venv" >&2
"$venv/bin/python" - "$site" $packages <<'PY'
import shutil, sys
from importlib import metadata
from pathlib import Path

site = Path(sys.argv[1])
for spec in sys.argv[2:]:
    dist = metadata.distribution(spec.split("==")[0])
    for file in dist.files or []:
        source = Path(dist.locate_file(file))
        if file.parts[0] == ".." or not source.is_file():  # scripts in bin/ are not needed
            continue
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
PY
printf '%s\n' $packages >"$rootfs/etc/pip/constraint.txt"
cat >"$rootfs/etc/profile.d/ngc-like.sh" <<'EOF'
export PIP_CONSTRAINT=/etc/pip/constraint.txt
EOF

echo "container-base: importing as $image" >&2
tar -C "$rootfs" -c . | podman import \
    --change 'ENV PIP_CONSTRAINT=/etc/pip/constraint.txt' \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
rm -rf "$rootfs"
echo "$image"
