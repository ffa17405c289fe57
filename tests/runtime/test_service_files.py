"""systemd integration: the unit file, the installer, and the sd_notify protocol."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from edge_vad.runtime import sdnotify

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "edge-vad.service"
INSTALL = REPO / "deploy" / "install.sh"
EXEC = "/opt/edge-vad/venv/bin/edge-vad"


# ------------------------------------------------------------------ the unit
def unit_directives() -> dict:
    """section -> key -> list of values (systemd keys may repeat)."""
    out: dict = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_the_required_directives():
    svc = unit_directives()["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "User": "edge-vad", "Group": "edge-vad", "SupplementaryGroups": "video", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/edge-vad",
        "StateDirectory": "edge-vad", "DevicePolicy": "closed", "TimeoutStopSec": "10",
        "ExecStart": f"{EXEC} run --config /etc/edge-vad/config.toml",
    }
    assert {k: one.get(k) for k in expected} == expected
    allow = set(svc["DeviceAllow"])
    assert {"char-video4linux rw", "/dev/apex_0 rw", "char-usb_device rw"} <= allow
    assert unit_directives()["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_and_installer_agree_on_paths():
    script = INSTALL.read_text()
    assert "DEFAULT_PREFIX=/opt/edge-vad" in script and "VENV=$PREFIX/venv" in script
    assert "CONF_DIR=${EDGE_VAD_CONF_DIR:-/etc/edge-vad}" in script and "$CONF_DIR/config.toml" in script
    example = (REPO / "deploy" / "edge-vad.toml").read_text()
    assert 'dir = "/var/lib/edge-vad/events"' in example  # events land in the only writable path


def test_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` needs ExecStart to exist, so a temp copy points it at an existing
    executable; every other line is the shipped unit. Unknown keys only WARN (exit 0), so any
    message about the unit fails the test too."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    true_bin = shutil.which("true")
    text = UNIT.read_text()
    assert f"ExecStart={EXEC} " in text
    copy = tmp_path / "edge-vad.service"
    copy.write_text(text.replace(f"ExecStart={EXEC} ", f"ExecStart={true_bin} "))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if "edge-vad.service" in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr
    # and a broken copy really fails (guards the check itself)
    copy.write_text(text.replace(f"ExecStart={EXEC} ", f"ExecStart={true_bin} ").replace("Type=notify", "Type=notifyy"))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert "edge-vad.service" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ the installer
def test_install_script_parses():
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)
    head = INSTALL.read_text().splitlines()[:20]
    assert head[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in head
    assert INSTALL.stat().st_mode & stat.S_IXUSR


STUB = """#!/usr/bin/env bash
# Records the call; simulates just enough of the real command on files under $STUB_STATE.
echo "$(basename "$0") $*" >> "$STUB_STATE/calls.log"
case $(basename "$0") in
  getent) grep -qx "$2" "$STUB_STATE/$1" 2>/dev/null; exit ;;
  groupadd) echo "${@: -1}" >> "$STUB_STATE/group" ;;
  useradd) echo "${@: -1}" >> "$STUB_STATE/passwd" ;;
  usermod) echo "$3" >> "$STUB_STATE/member" ;;
  id) if [[ $1 == -u ]]; then echo 0; exit 0; fi
      grep -qx "${@: -1}" "$STUB_STATE/passwd" 2>/dev/null || exit 1
      echo "edge-vad $(tr '\\n' ' ' < "$STUB_STATE/member" 2>/dev/null)" ;;
  systemctl) if [[ $1 == is-active ]]; then [[ -e $STUB_STATE/active ]]; exit; fi
             if [[ $1 == enable && $2 == --now ]]; then touch "$STUB_STATE/active"; fi ;;
  python3) if [[ $1 == -c ]]; then  # the installer's probes: version (from $STUB_STATE), venv module
             [[ $2 == *ensurepip* && -e $STUB_STATE/no_venv ]] && exit 1
             cat "$STUB_STATE/python_version" 2>/dev/null || echo 3.11.7; exit 0
           fi
           mkdir -p "${@: -1}/bin"; cp "$0" "${@: -1}/bin/pip"; cp "$0" "${@: -1}/bin/python" ;;
  pip) if [[ $1 == show ]]; then [[ -e $STUB_STATE/pip-${@: -1} ]]; exit; fi
       if [[ $1 == uninstall ]]; then rm -f "$STUB_STATE/pip-${@: -1}"; fi ;;
  python) if [[ $1 == -c ]]; then cat "$STUB_STATE/cv2"; exit; fi
          printf 'numpy>=1.22\nonnxruntime>=1.16\n' ;;  # the dependency list of a Jetson install
  runuser) exit "$(cat "$STUB_STATE/runuser_rc" 2>/dev/null || echo 0)" ;;
esac
exit 0
"""


@pytest.fixture
def stubbed(tmp_path):
    """PATH with recording stubs for every command that needs root or changes the system; the
    install locations moved under tmp_path."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("getent", "groupadd", "useradd", "usermod", "id", "systemctl", "python3"):
        path = bin_dir / name
        path.write_text(STUB)
        path.chmod(0o755)
    (state / "group").write_text("video\n")  # this "system" has a video group but no apex/plugdev/render
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STUB_STATE=str(state), PYTHON="python3",
               EDGE_VAD_PREFIX=str(tmp_path / "opt"), EDGE_VAD_CONF_DIR=str(tmp_path / "etc"),
               EDGE_VAD_UNIT_DIR=str(tmp_path / "units"))
    return tmp_path, state, env


def _install(env, *args):
    proc = subprocess.run(["bash", str(INSTALL), *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _calls(state: Path) -> list:
    log = state / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_dry_run_prints_the_plan_and_changes_nothing(stubbed):
    root, state, env = stubbed
    out = _install(env, "--dry-run")
    for expected in ("+ groupadd --system edge-vad", "+ useradd --system", "+ usermod --append --groups video edge-vad",
                     "-m venv --system-site-packages", "pip install --upgrade", "config.toml",
                     "+ systemctl daemon-reload", "+ systemctl enable --now edge-vad.service"):
        assert expected in out, out
    mutating = [c for c in _calls(state) if c.split()[0] in ("groupadd", "useradd", "usermod", "pip")
                or c.startswith(("python3 -m", "systemctl daemon-reload", "systemctl enable", "systemctl restart"))]
    assert mutating == []
    assert sorted(p.name for p in root.iterdir()) == ["bin", "state"]  # no prefix, config or unit dir created


def test_install_then_reinstall_is_idempotent(stubbed):
    root, state, env = stubbed
    _install(env)
    first = _calls(state)
    assert "groupadd --system edge-vad" in first
    assert any(c.startswith("useradd --system --gid edge-vad") for c in first)
    assert "usermod --append --groups video edge-vad" in first
    assert not any(c.startswith("usermod") and "apex" in c for c in first)  # absent groups are skipped
    assert any(c.startswith("python3 -m venv --system-site-packages") for c in first)
    assert any(c.startswith("pip install --upgrade") and c.endswith("[mqtt]") for c in first)
    assert "systemctl daemon-reload" in first and "systemctl enable --now edge-vad.service" in first
    config = root / "etc" / "config.toml"
    assert config.read_text() == (REPO / "deploy" / "edge-vad.toml").read_text()
    unit = (root / "units" / "edge-vad.service").read_text()
    assert f"ExecStart={root}/opt/venv/bin/edge-vad run --config" in unit  # points at this venv

    config.write_text("# edited by the user\n")
    (state / "calls.log").unlink()
    out = _install(env)
    second = _calls(state)
    for once_only in ("groupadd", "useradd", "usermod", "python3 -m venv", "python3 -c import ensurepip"):
        assert not any(c.startswith(once_only) for c in second), (once_only, second)
    assert config.read_text() == "# edited by the user\n"  # never overwritten
    assert "is up to date" in out and "systemctl restart edge-vad.service" in second  # running: restarted


def test_coral_extra_says_which_interpreter_and_whether_it_pairs(stubbed):
    import sys

    root, state, env = stubbed
    out = _install(dict(env, EDGE_VAD_EXTRAS="mqtt,coral", PYTHON=sys.executable), "--dry-run")
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    expected = ("tflite-runtime 2.11.0 (numpy<2); pairs with" if sys.version_info < (3, 10) else
                "ai-edge-litert; NOT known to pair with Coral's apt libedgetpu 16.0")
    assert f"edge-vad install: coral extra on Python {py}: {expected}" in out, out
    assert "pip install --upgrade" in out and "mqtt\\,coral" in out  # printf %q escapes the brackets and comma
    assert not (root / "opt").exists()
    _install(dict(env, EDGE_VAD_EXTRAS="coral"))  # for real: after pip, the installed pair is checked
    calls = _calls(state)
    assert any(c.endswith("edge_vad/backends/coral_pairs.py") for c in calls)
    assert "python -m edge_vad.backends.coral_pairs --check" in calls


def test_installer_refuses_without_root(stubbed, tmp_path):
    _, state, env = stubbed
    (Path(env["PATH"].split(":")[0]) / "id").write_text("#!/usr/bin/env bash\necho 1000\n")
    proc = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "must run as root" in proc.stderr and "--dry-run" in proc.stderr
    assert [c for c in _calls(state) if not c.startswith("python3 -c ")] == []  # only the Python probe ran


# ------------------------------------------------------------------ the installer's Python check
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def _assert_refused_untouched(proc: subprocess.CompletedProcess, root: Path, state: Path, needle: str) -> None:
    """One line on stderr, non-zero exit, and nothing changed: no user, venv, config or unit, no command run but
    the interpreter probes."""
    assert proc.returncode != 0, proc.stdout
    assert len(proc.stderr.splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert [c for c in _calls(state) if not c.startswith("python3 -c ")] == []
    assert sorted(p.name for p in root.iterdir()) == ["bin", "state"]


@pytest.mark.parametrize("mode", [[], ["--dry-run"]], ids=["install", "dry-run"])
@pytest.mark.parametrize("version", ["3.7.3", "3.6.9", "2.7.18"])
def test_installer_refuses_an_old_python_before_changing_anything(stubbed, version, mode):
    root, state, env = stubbed
    (state / "python_version").write_text(version + "\n")
    proc = subprocess.run(["bash", str(INSTALL), *mode], env=env, capture_output=True, text=True, timeout=60)
    _assert_refused_untouched(proc, root, state, f"Python {version} (python3) is not supported")
    assert "needs Python 3.8-3.13" in proc.stderr and "PYTHON=" in proc.stderr


@pytest.mark.parametrize("version", ["3.6", "3.7", "2.7"])
def test_installer_refuses_a_real_old_interpreter(stubbed, version):
    """The same check against the real interpreters (pyenv's), so the version probe itself runs on them."""
    root, state, env = stubbed
    builds = sorted(PYENV.glob(f"{version}.*/bin/python"))
    if not builds:
        pytest.skip(f"no Python {version} under {PYENV} (pyenv install {version}) to run the installer's probe on")
    proc = subprocess.run(["bash", str(INSTALL), "--dry-run"], env=dict(env, PYTHON=str(builds[-1])),
                          capture_output=True, text=True, timeout=60)
    _assert_refused_untouched(proc, root, state, f"Python {builds[-1].parents[1].name} ({builds[-1]}) is not supported")


def test_installer_accepts_a_real_oldest_python(stubbed):
    root, state, env = stubbed
    builds = sorted(PYENV.glob("3.8.*/bin/python"))
    if not builds:
        pytest.skip(f"no Python 3.8 under {PYENV} (pyenv install 3.8) to run the installer's probe on")
    out = _install(dict(env, PYTHON=str(builds[-1])), "--dry-run")
    assert f"Python {builds[-1].parents[1].name} ({builds[-1]})" in out
    assert f"+ {builds[-1]} -m venv --system-site-packages" in out


def test_installer_without_python_or_venv_module_says_what_to_install(stubbed):
    root, state, env = stubbed
    proc = subprocess.run(["bash", str(INSTALL)], env=dict(env, PYTHON=str(root / "no-such-python")),
                          capture_output=True, text=True, timeout=60)
    _assert_refused_untouched(proc, root, state, "no working Python interpreter")
    (state / "no_venv").touch()  # Debian/Ubuntu's python3 without python3-venv
    proc = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=60)
    _assert_refused_untouched(proc, root, state, "apt-get install python3-venv")


def test_installer_notes_a_python_newer_than_tested(stubbed):
    _, state, env = stubbed
    (state / "python_version").write_text("3.14.0\n")
    out = _install(env, "--dry-run")
    assert "Python 3.14.0 is newer than the newest tested (3.13); continuing" in out


# ------------------------------------------------------------------ the installer on a Jetson
JETPACK_CV2 = "/usr/lib/python3/dist-packages/cv2/__init__.py YES"


@pytest.fixture
def jetson(stubbed):
    """The stubbed installer on a "Jetson": a tegra release file, JetPack's cv2 with GStreamer, and stubs for
    the commands only the Jetson part runs as root (install -o, runuser)."""
    root, state, env = stubbed
    bin_dir = Path(env["PATH"].split(":")[0])
    for name in ("install", "runuser"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    release = root / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64\n")
    (state / "cv2").write_text(JETPACK_CV2)
    return root, state, dict(env, EDGE_VAD_TEGRA_RELEASE=str(release))


def test_jetson_dry_run_keeps_jetpacks_opencv_and_builds_engines(jetson):
    _, state, env = jetson
    out = _install(env, "--dry-run")
    assert "Jetson: # R36 (release), REVISION: 3.0" in out
    assert "pip install --upgrade --no-deps" in out and "numpy<2" in out and "except OpenCV" in out
    assert "opencv" not in out.split("except OpenCV")[0].split("--no-deps")[1]
    assert "would check that" in out and "GStreamer" in out
    assert "models build-engines --config" in out and "runuser -u edge-vad -- env HOME=/var/lib/edge-vad" in out
    assert not any(c.startswith(("pip", "runuser", "install")) for c in _calls(state))


def test_jetson_install_and_reinstall_never_leave_pypi_opencv_in_the_venv(jetson):
    root, state, env = jetson
    _install(env)
    first = _calls(state)
    assert any(c.startswith("pip install --upgrade --no-deps") for c in first)
    deps = next(c for c in first if c.startswith("pip install --upgrade numpy<2"))
    assert deps == "pip install --upgrade numpy<2 numpy>=1.22 onnxruntime>=1.16"  # no OpenCV among them
    assert not any(c.startswith("pip install") and c.endswith("[mqtt]") for c in first)  # never with its deps
    assert any(c.startswith("runuser -u edge-vad -- env HOME=/var/lib/edge-vad") and "models build-engines" in c
               for c in first)
    # someone (an old installer, a user) put PyPI OpenCV into the venv: the next run takes it out again
    (state / "pip-opencv-python-headless").touch()
    (state / "calls.log").unlink()
    _install(env)
    assert "pip uninstall -y opencv-python-headless" in _calls(state)
    assert not (state / "pip-opencv-python-headless").exists()


@pytest.mark.parametrize("cv2, message", [
    ("/opt/venv/lib/python3.10/site-packages/cv2/__init__.py YES", "cv2 comes from the venv"),
    ("/usr/lib/python3/dist-packages/cv2/__init__.py NO", "has no GStreamer"),
    ("", "cannot import cv2"),
])
def test_jetson_install_refuses_an_opencv_without_gstreamer(jetson, cv2, message):
    root, state, env = jetson
    (state / "cv2").write_text(cv2.replace("/opt/venv", f"{root}/opt/venv"))
    if not cv2:
        (state / "cv2").unlink()
    proc = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert not any(c.startswith("systemctl enable") for c in _calls(state))


def test_jetson_engine_build_failure_stops_the_install_but_a_missing_tensorrt_does_not(jetson):
    _, state, env = jetson
    (state / "runuser_rc").write_text("3")  # MissingDependency: no TensorRT in the venv
    assert "the service will run on onnxruntime" in _install(env)
    (state / "runuser_rc").write_text("1")
    proc = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "building the TensorRT engines failed" in proc.stderr
    assert "first start builds the TensorRT engines" in _install(dict(env, EDGE_VAD_BUILD_ENGINES="0"))


def test_unit_allows_the_jetson_device_nodes_nvidia_lists():
    """JetPack 6 (r36) names from NVIDIA's devices.csv, JetPack 4/5 names from the same CSVs of those releases."""
    allow = set(unit_directives()["Service"]["DeviceAllow"])
    for node in ("/dev/nvmap", "/dev/nvhost-ctrl", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvhost-as-gpu",
                 "/dev/nvhost-prof-gpu", "/dev/nvgpu/igpu0/ctrl", "/dev/nvgpu/igpu0/channel", "/dev/nvgpu/igpu0/as",
                 "/dev/nvgpu/igpu0/tsg", "/dev/host1x-fence", "/dev/nvhost-vic", "/dev/nvhost-nvdec",
                 "/dev/v4l2-nvdec"):
        assert f"{node} rw" in allow, node
    assert not any(a.startswith(("/dev/fb", "/dev/dri/card")) for a in allow)  # display nodes: not needed


# ------------------------------------------------------------------ sd_notify
@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, {"NOTIFY_SOCKET": str(path)}
    sock.close()


def test_notify_sends_datagrams(notify_socket):
    sock, env = notify_socket
    assert sdnotify.ready(env) and sock.recv(4096) == b"READY=1"
    assert sdnotify.watchdog(env) and sock.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.stopping(env) and sock.recv(4096) == b"STOPPING=1"
    assert sdnotify.status("cam: 15 fps\nok", env) and sock.recv(4096) == b"STATUS=cam: 15 fps ok"
    assert sdnotify.extend_timeout(90, env) and sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=90000000"


def test_notify_abstract_namespace():
    name = f"edge-vad-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
    except OSError as exc:  # pragma: no cover - non-Linux
        pytest.skip(f"abstract AF_UNIX sockets unavailable: {exc}")
    sock.settimeout(5)
    with sock:
        assert sdnotify.ready({"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_notify_is_a_noop_without_socket_and_never_raises(tmp_path):
    assert sdnotify.ready({}) is False
    assert sdnotify.ready({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_watchdog_interval_and_pacing(notify_socket):
    sock, env = notify_socket
    assert sdnotify.watchdog_interval_s({}) is None
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # not for us
    clock = [100.0]
    dog = sdnotify.Watchdog.from_env(dict(env, WATCHDOG_USEC="2000000"), clock=lambda: clock[0])
    assert dog.enabled and dog.interval_s == 1.0
    sent = []
    for _ in range(10):  # 0.25 s steps over 2.5 s: pings at 100.0, 101.0, 102.0
        sent.append(dog.maybe_ping())
        clock[0] += 0.25
    assert sent.count(True) == 3 and dog.pings == 3
    assert [sock.recv(64) for _ in range(3)] == [b"WATCHDOG=1"] * 3
    assert not sdnotify.Watchdog.from_env({}).maybe_ping()
