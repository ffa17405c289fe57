"""The typed config: defaults, the shipped example, and errors that name file, key path and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_vad.config import Config, config_errors, load_config, read_toml
from edge_vad.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "deploy" / "edge-vad.toml"


def test_shipped_example_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.sources[0].uri == "/dev/video0"
    assert cfg.gate.on_threshold > cfg.gate.off_threshold


def test_defaults_without_file():
    assert load_config(None) == Config()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_path(tmp_path):
    path = _write(tmp_path, "[gate]\non_treshold = 0.7\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "gate.on_treshold" in msg and "unknown key" in msg and "0.7" in msg


def test_bad_value_names_path_and_value(tmp_path):
    path = _write(tmp_path, '[[sources]]\nname = "a"\nuri = "/dev/video0"\nwidth = -5\n')
    lines = config_errors(read_toml(path), str(path))
    assert len(lines) == 1
    assert "sources[0].width = -5" in lines[0]


def test_hysteresis_checked(tmp_path):
    path = _write(tmp_path, "[gate]\non_threshold = 0.3\noff_threshold = 0.5\n")
    with pytest.raises(ConfigError, match="off_threshold"):
        load_config(path)


def test_duplicate_source_names(tmp_path):
    text = '[[sources]]\nname = "a"\nuri = "x.mp4"\n[[sources]]\nname = "a"\nuri = "y.mp4"\n'
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config(_write(tmp_path, text))


def test_every_error_reported_at_once(tmp_path):
    path = _write(tmp_path, "[http]\nport = 0\n[mqtt]\nport = 70000\nbogus = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(str(err.value).splitlines()) == 3


def test_toml_syntax_error_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "[gate\n"))
    assert "not valid TOML" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_edgetpu_device_spelling(tmp_path):
    assert load_config(_write(tmp_path, '[runtime]\nedgetpu_device = "usb:1"\n')).runtime.edgetpu_device == "usb:1"
    with pytest.raises(ConfigError, match="edgetpu_device"):
        load_config(_write(tmp_path, '[runtime]\nedgetpu_device = "usb1"\n'))


# ----------------------------------------------------------------------------- issue 14, case 8
@pytest.mark.parametrize("text,where", [('[mqtt]\nenabled = "yes"\n', "mqtt.enabled = 'yes'"),
                                        ('[mqtt]\nport = "1883"\n', "mqtt.port = '1883'"),
                                        ('[events]\nclips = "off"\n', "events.clips = 'off'"),
                                        ('[gate]\nmin_open_s = "1.5"\n', "gate.min_open_s = '1.5'"),
                                        ("[runtime]\nthreads = true\n", "runtime.threads = True"),
                                        ("[runtime]\nthreads = 2.0\n", "runtime.threads = 2.0")])
def test_strings_and_bools_are_not_coerced(tmp_path, text, where):
    lines = config_errors(read_toml(_write(tmp_path, text)), "c.toml")
    assert len(lines) == 1 and where in lines[0], lines


def test_strict_types_still_take_ints_for_floats_and_strings_for_paths(tmp_path):
    cfg = load_config(_write(tmp_path, '[events]\ndir = "/var/ev"\nclip_pre_roll_s = 2\n'
                                       '[[sources]]\nname = "a"\nuri = "x.mp4"\nfps = 15\n'))
    assert cfg.events.dir == Path("/var/ev") and cfg.events.clip_pre_roll_s == 2.0 and cfg.sources[0].fps == 15.0


def test_quoted_value_says_to_drop_the_quotes(tmp_path):
    (line,) = config_errors(read_toml(_write(tmp_path, '[mqtt]\nenabled = "yes"\n')), "c.toml")
    assert "without quotes" in line


def test_non_utf8_file_and_a_folder_are_one_line_errors(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[gate]\n# café\n".encode("latin-1"))
    for path, needle in ((latin, "not UTF-8"), (tmp_path, "is a folder")):
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert needle in str(err.value) and len(str(err.value).splitlines()) == 1
