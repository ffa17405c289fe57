#!/usr/bin/env bash
# Install edge-vad as a systemd service (Jetson, Coral boards, any systemd Linux).
#
#   sudo deploy/install.sh              install or upgrade, enable and start the service
#   deploy/install.sh --dry-run         print what it would do; changes nothing, no root needed
#   sudo deploy/install.sh --no-start   install and enable, but do not start / restart
#
# Idempotent: an existing user, venv and /etc/edge-vad/config.toml are kept; running it
# again upgrades the package and the unit and restarts a running service.
#
# Environment (defaults in brackets):
#   EDGE_VAD_EXTRAS   pip extras to install [mqtt]; e.g. "mqtt,coral" on a Coral board (the installer says
#                     which TFLite interpreter that brings and whether it is known to run Coral's libedgetpu)
#   EDGE_VAD_BUILD_ENGINES  on a Jetson: build the TensorRT engines now [1]; 0 leaves it to the first start
#   PYTHON            interpreter for the venv [python3]; Python 3.8-3.13 (checked first, before
#                     anything changes: README "Python versions and hosts")
#   EDGE_VAD_PREFIX, EDGE_VAD_CONF_DIR, EDGE_VAD_UNIT_DIR   install locations
#                     [/opt/edge-vad, /etc/edge-vad, /etc/systemd/system] (packaging, tests)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname -- "$SCRIPT_DIR")
DEFAULT_PREFIX=/opt/edge-vad
PREFIX=${EDGE_VAD_PREFIX:-$DEFAULT_PREFIX}
VENV=$PREFIX/venv
CONF_DIR=${EDGE_VAD_CONF_DIR:-/etc/edge-vad}
UNIT_DIR=${EDGE_VAD_UNIT_DIR:-/etc/systemd/system}
STATE_DIR=/var/lib/edge-vad  # created by systemd (StateDirectory=); the user's home
SERVICE=edge-vad.service
SERVICE_USER=edge-vad
PYTHON=${PYTHON:-python3}
# Supported interpreters (pyproject.toml requires-python; tests/test_python_versions.py installs on both ends).
OLDEST_PYTHON=3.8
NEWEST_PYTHON=3.13
EXTRAS=${EDGE_VAD_EXTRAS-mqtt}
# Device groups the daemon may need, where the system has them: cameras and Jetson GPU
# (video, render), Coral USB (plugdev, udev rule of libedgetpu), Coral PCIe (apex).
DEVICE_GROUPS=(video render plugdev apex)

DRY_RUN=0
START=1

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
note() { echo "edge-vad install: $*"; }
die() { echo "edge-vad install: error: $*" >&2; exit 1; }
# Print every changing command; run it unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if (( ! DRY_RUN )); then "$@"; fi
}

while (( $# )); do
    case $1 in
        --dry-run|-n) DRY_RUN=1 ;;
        --no-start) START=0 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1'; see $0 --help" ;;
    esac
    shift
done

[[ -f $REPO_DIR/pyproject.toml && -f $SCRIPT_DIR/edge-vad.toml && -f $SCRIPT_DIR/$SERVICE ]] \
    || die "run this from an edge-vad source tree (pyproject.toml, deploy/edge-vad.toml and deploy/$SERVICE next to it)"

# 0. The interpreter, before anything changes (no user, no venv): the runtime's wheels need 3.8 or newer.
# 3.7 (Coral Dev Board, Mendel) and 3.6 (Jetson Nano, JetPack 4.6) have no wheels of onnxruntime >= 1.16,
# numpy >= 1.22, scikit-learn >= 1.3 or matplotlib >= 3.7 (3.6: no pydantic 2 either): README has the route.
python_version=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) \
    || die "no working Python interpreter '$PYTHON'; install Python $OLDEST_PYTHON-$NEWEST_PYTHON (Debian/Ubuntu: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3"
version_key() { local IFS=.; set -- $1; echo $(( $1 * 1000 + $2 )); }
if (( $(version_key "$python_version") < $(version_key "$OLDEST_PYTHON") )); then
    die "Python $python_version ($PYTHON) is not supported: edge-vad needs Python $OLDEST_PYTHON-$NEWEST_PYTHON (3.6 and 3.7 lack wheels of onnxruntime, numpy, scikit-learn and matplotlib that it needs; README \"Python versions and hosts\" has the route for Jetson Nano and Coral Dev Board); set PYTHON=/path/to/python3.8+"
fi
if (( $(version_key "$python_version") > $(version_key "$NEWEST_PYTHON") )); then
    note "Python $python_version is newer than the newest tested ($NEWEST_PYTHON); continuing"
fi
if [[ ! -x $VENV/bin/python ]] && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    die "Python $python_version ($PYTHON) cannot create a venv (no ensurepip/venv module); install it (Debian/Ubuntu: apt-get install python3-venv) and run again"
fi
note "Python $python_version ($PYTHON)"
if (( DRY_RUN )); then
    note "dry run: nothing will be changed"
elif [[ $(id -u) -ne 0 ]]; then
    die "must run as root to create the user and install the service: sudo $0 (or preview with --dry-run)"
fi
if (( ! DRY_RUN )); then
    command -v systemctl >/dev/null || die "systemctl not found: this installer needs systemd"
fi

# 1. A system user and group; device groups that exist here.
if getent group "$SERVICE_USER" >/dev/null; then
    note "group $SERVICE_USER exists"
else
    run groupadd --system "$SERVICE_USER"
fi
if getent passwd "$SERVICE_USER" >/dev/null; then
    note "user $SERVICE_USER exists"
else
    run useradd --system --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "edge-vad daemon" "$SERVICE_USER"
fi
member_of=" $(id -nG "$SERVICE_USER" 2>/dev/null || true) "
for group in "${DEVICE_GROUPS[@]}"; do
    getent group "$group" >/dev/null || continue
    if [[ $member_of == *" $group "* ]]; then
        note "user $SERVICE_USER is in group $group"
    else
        run usermod --append --groups "$group" "$SERVICE_USER"
    fi
done

# --- Jetson (JetPack) -----------------------------------------------------------------------------------
# JetPack's OpenCV is built with GStreamer (csi:// cameras, hardware decoding); PyPI's opencv-python-headless,
# an edge-vad dependency, is not, and in the venv it would shadow JetPack's cv2 from the system site-packages.
# So on a Jetson: edge-vad without its dependencies, then every dependency but OpenCV, with numpy < 2 (JetPack's
# cv2 and TensorRT bindings are built against numpy 1.x); and a PyPI OpenCV already in the venv is removed,
# on every run, so re-running the installer keeps the fix. docs/jetson.md, "OpenCV on a Jetson".
TEGRA_RELEASE=${EDGE_VAD_TEGRA_RELEASE:-/etc/nv_tegra_release}
JETSON=0
if [[ -f $TEGRA_RELEASE ]]; then
    JETSON=1
    note "Jetson: $(head -n 1 "$TEGRA_RELEASE" 2>/dev/null || true)"
fi
PYPI_OPENCV=(opencv-python opencv-python-headless opencv-contrib-python opencv-contrib-python-headless)

jetson_dependencies() {  # edge-vad's requirements for $EXTRAS, OpenCV left out, one per line
    "$VENV/bin/python" - "$EXTRAS" <<'PY'
import importlib.metadata, sys
from pip._vendor.packaging.requirements import Requirement
extras = [""] + [e.strip() for e in sys.argv[1].split(",") if e.strip()]
for text in importlib.metadata.requires("edge-vad") or []:
    req = Requirement(text)
    if req.name.lower().startswith("opencv") or (req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras)):
        continue
    print(f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}")
PY
}

jetson_pip_install() {
    run "$VENV/bin/pip" install --upgrade --no-deps "$REPO_DIR"
    if (( DRY_RUN )); then
        echo "+ $VENV/bin/pip install --upgrade 'numpy<2' <edge-vad's dependencies for [$EXTRAS] except OpenCV>"
    else
        local deps
        mapfile -t deps < <(jetson_dependencies)
        run "$VENV/bin/pip" install --upgrade "numpy<2" "${deps[@]}"
    fi
    local pkg
    for pkg in "${PYPI_OPENCV[@]}"; do
        if [[ -x $VENV/bin/pip ]] && "$VENV/bin/pip" show -q "$pkg" >/dev/null 2>&1; then
            run "$VENV/bin/pip" uninstall -y "$pkg"
        fi
    done
}

jetson_check_opencv() {  # the venv must import JetPack's cv2, built with GStreamer
    if (( DRY_RUN )); then
        note "would check that $VENV/bin/python imports JetPack's cv2 (not the venv's) with GStreamer"
        return
    fi
    local info cv2_file gstreamer
    info=$("$VENV/bin/python" -c 'import re, cv2; m = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation()); print(cv2.__file__, m.group(1) if m else "NO")' 2>/dev/null) \
        || die "the venv cannot import cv2: install JetPack's OpenCV (sudo apt install nvidia-opencv) and re-run"
    read -r cv2_file gstreamer <<< "$info"
    [[ $cv2_file != "$VENV"/* ]] || die "cv2 comes from the venv ($cv2_file), not from JetPack; remove it ($VENV/bin/pip uninstall opencv-python-headless) and re-run"
    [[ $gstreamer == YES* ]] || die "JetPack's cv2 ($cv2_file) has no GStreamer (getBuildInformation says '$gstreamer'), so csi:// cameras cannot open; reinstall JetPack's OpenCV (sudo apt install --reinstall nvidia-opencv)"
    note "cv2 from JetPack ($cv2_file), GStreamer $gstreamer"
}

jetson_build_engines() {  # as the service user, with its home: the cache lands where the service looks
    [[ ${EDGE_VAD_BUILD_ENGINES:-1} == 1 ]] || { note "EDGE_VAD_BUILD_ENGINES=0: the first start builds the TensorRT engines"; return; }
    run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$STATE_DIR"
    local cmd=(runuser -u "$SERVICE_USER" -- env HOME="$STATE_DIR" "$VENV/bin/edge-vad" models build-engines --config "$CONF_DIR/config.toml")
    printf '+'; printf ' %q' "${cmd[@]}"; printf '\n'
    (( DRY_RUN )) && return
    local rc=0
    "${cmd[@]}" || rc=$?
    case $rc in
        0) ;;
        3) note "TensorRT or its CUDA binding is not importable from the venv: the service will run on onnxruntime (edge-vad models backends says what is missing)" ;;
        *) die "building the TensorRT engines failed (see above); fix that, or re-run with EDGE_VAD_BUILD_ENGINES=0" ;;
    esac
}
# ---------------------------------------------------------------------------------------------------------

# 2. The package in its own venv. --system-site-packages: TensorRT / pycuda / OpenCV (JetPack) and
# pycoral (Coral's apt repository) come from the system Python, not from PyPI.
if [[ -x $VENV/bin/python ]]; then
    note "venv $VENV exists"
else
    run install -d -m 0755 "$PREFIX"
    run "$PYTHON" -m venv --system-site-packages "$VENV"
fi
# Coral: the `coral` extra picks, per Python version, the TFLite interpreter known to run Coral's libedgetpu
# (edge_vad/backends/coral_pairs.py: the pairs and their sources). Say which one, or plainly that PyPI has none.
if [[ ,$EXTRAS, == *,coral,* ]]; then
    note "$("$PYTHON" "$REPO_DIR/edge_vad/backends/coral_pairs.py")"
fi
if (( JETSON )); then
    jetson_pip_install
    jetson_check_opencv
else
    run "$VENV/bin/pip" install --upgrade "$REPO_DIR${EXTRAS:+[$EXTRAS]}"
fi
if [[ ,$EXTRAS, == *,coral,* ]] && (( ! DRY_RUN )); then
    # the interpreter now installed against this host's libedgetpu: OK, or a WARNING naming the pair
    note "$("$VENV/bin/python" -m edge_vad.backends.coral_pairs --check)"
fi

# 3. The config: never overwrite one the user may have edited.
if [[ -e $CONF_DIR/config.toml ]]; then
    note "keeping existing $CONF_DIR/config.toml"
else
    run install -d -m 0755 "$CONF_DIR"
    run install -m 0644 "$SCRIPT_DIR/edge-vad.toml" "$CONF_DIR/config.toml"
fi

# 4. The unit, pointing at this venv.
unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
sed "s#$DEFAULT_PREFIX/venv/bin/edge-vad#$VENV/bin/edge-vad#" "$SCRIPT_DIR/$SERVICE" > "$unit_tmp"
if cmp -s "$unit_tmp" "$UNIT_DIR/$SERVICE"; then
    note "unit $UNIT_DIR/$SERVICE is up to date"
else
    run install -d -m 0755 "$UNIT_DIR"
    run install -m 0644 "$unit_tmp" "$UNIT_DIR/$SERVICE"
fi

# 4b. On a Jetson: the TensorRT engines, built and checked now rather than at the first start.
if (( JETSON )); then
    jetson_build_engines
fi

# 5. Enable and start; a service that was already running is restarted onto the new code.
was_active=0
if command -v systemctl >/dev/null && systemctl is-active --quiet "$SERVICE" 2>/dev/null; then
    was_active=1
fi
run systemctl daemon-reload
if (( START )); then
    run systemctl enable --now "$SERVICE"
    if (( was_active )); then
        run systemctl restart "$SERVICE"
    fi
    note "done; follow it with: journalctl -u $SERVICE -f   (health: curl -s http://127.0.0.1:8085/healthz)"
else
    run systemctl enable "$SERVICE"
    note "done; start it with: systemctl start $SERVICE"
fi
