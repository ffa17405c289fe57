"""Target profiles: every shipped TOML loads, its budgets are the paper's, and detection reads a fake root."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_vad.bench.profiles import detect, load_profile, parse_profile, target_names, usb_ids
from edge_vad.constants import CORAL_MAX_MODEL_BYTES, JETSON_NANO_MAX_FLOPS, JETSON_NANO_MAX_PARAMS
from edge_vad.errors import EdgeVadError

TARGETS = ("jetson-nano", "jetson-orin-nano", "coral-usb", "coral-devboard", "host")


def test_all_five_targets_ship_and_load():
    assert set(TARGETS) <= set(target_names())
    for name in TARGETS:
        p = load_profile(name)
        assert p.name == name and p.preferred_backends and p.budgets.source


def test_budgets_are_the_papers():
    for name in ("jetson-nano", "jetson-orin-nano"):
        b = load_profile(name).budgets
        assert b.max_params == JETSON_NANO_MAX_PARAMS and b.max_flops == JETSON_NANO_MAX_FLOPS
    for name in ("coral-usb", "coral-devboard"):
        b = load_profile(name).budgets
        assert b.max_model_bytes == CORAL_MAX_MODEL_BYTES and b.all_ops_on_tpu
        assert load_profile(name).preferred_backends[0] == "edgetpu"
    assert load_profile("jetson-nano").preferred_backends[0] == "tensorrt"
    assert all(load_profile(n).budgets.max_peak_rss_mb == 300 for n in TARGETS)


def test_unknown_target_is_one_line_exit_2():
    with pytest.raises(EdgeVadError) as err:
        load_profile("raspberry-pi")
    assert err.value.exit_code == 2 and "unknown target 'raspberry-pi'" in str(err.value)
    assert "jetson-nano" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(EdgeVadError):
        load_profile("../host")


def test_bad_profile_names_the_key():
    data = {"name": "x", "description": "d", "preferred_backends": ["onnxruntime"],
            "budgets": {"source": "s", "max_parms": 1}, "detect": {}, "reference": {"measured": False}}
    with pytest.raises(EdgeVadError) as err:
        parse_profile(data, "x.toml")
    assert "x.toml" in str(err.value) and "budgets.max_parms" in str(err.value) and err.value.exit_code == 2


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_detect_jetson_nano_from_device_tree(tmp_path):
    _write(tmp_path, "proc/device-tree/model", b"NVIDIA Jetson Nano Developer Kit\x00")
    assert detect(load_profile("jetson-nano"), tmp_path).on_target
    # the Orin Nano's string does not contain "Jetson Nano", and vice versa
    orin = detect(load_profile("jetson-orin-nano"), tmp_path)
    assert not orin.on_target and "NVIDIA Jetson Nano Developer Kit" in orin.reason
    _write(tmp_path, "proc/device-tree/model", b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert detect(load_profile("jetson-orin-nano"), tmp_path).on_target
    assert not detect(load_profile("jetson-nano"), tmp_path).on_target


def test_detect_coral_usb_from_sysfs_ids(tmp_path):
    prof = load_profile("coral-usb")
    miss = detect(prof, tmp_path)
    assert not miss.on_target and "1a6e:089a" in miss.reason
    _write(tmp_path, "sys/bus/usb/devices/1-1/idVendor", b"18d1\n")
    _write(tmp_path, "sys/bus/usb/devices/1-1/idProduct", b"9302\n")
    _write(tmp_path, "sys/bus/usb/devices/1-2/idVendor", b"8087\n")
    _write(tmp_path, "sys/bus/usb/devices/1-2/idProduct", b"0024\n")
    assert usb_ids(tmp_path) == ["18d1:9302", "8087:0024"]
    hit = detect(prof, tmp_path)
    assert hit.on_target and "18d1:9302" in hit.reason


def test_detect_coral_devboard_from_apex_node(tmp_path):
    prof = load_profile("coral-devboard")
    assert not detect(prof, tmp_path).on_target
    _write(tmp_path, "dev/apex_0", b"")
    assert detect(prof, tmp_path).on_target


def test_host_is_always_the_target(tmp_path):
    assert detect(load_profile("host"), tmp_path).on_target


def test_this_machine_is_not_a_board_when_it_has_no_board_files():
    # The development machine has none of the boards' files; on a board this test would say so instead.
    if Path("/proc/device-tree/model").exists() or Path("/dev/apex_0").exists():
        pytest.skip("running on a board-like machine")
    assert not detect(load_profile("jetson-nano")).on_target
