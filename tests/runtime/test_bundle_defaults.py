"""Where the gate's thresholds come from: the user's config, else the bundle's fitted suggestion, else defaults."""

from edge_vad.bundle.manifest import GateSuggestion
from edge_vad.config import GateConfig
from edge_vad.runtime.bundle_defaults import with_bundle_thresholds

SUGGESTION = GateSuggestion(on_threshold=0.31, off_threshold=0.22, rule="test rule")


def test_bundle_suggestion_replaces_untouched_defaults():
    gate, origin = with_bundle_thresholds(GateConfig(smoothing_frames=4), SUGGESTION)
    assert (gate.on_threshold, gate.off_threshold, gate.smoothing_frames) == (0.31, 0.22, 4)
    assert origin.startswith("bundle") and "test rule" in origin


def test_config_thresholds_win_over_the_bundle():
    cfg = GateConfig(on_threshold=0.7, off_threshold=0.5)
    assert with_bundle_thresholds(cfg, SUGGESTION) == (cfg, "config")
    only_on = GateConfig(on_threshold=0.9)  # one set by the user: the pair stays the user's (no mixed hysteresis)
    assert with_bundle_thresholds(only_on, SUGGESTION)[0].on_threshold == 0.9


def test_no_suggestion_keeps_the_defaults():
    gate, origin = with_bundle_thresholds(GateConfig(), None)
    assert gate == GateConfig() and origin.startswith("defaults")


def _manifest(gate=None, frames_per_snippet=None):
    """The shipped manifest's fields with the two fitted settings replaced."""
    from edge_vad.bundle import default_bundle_dir, load_manifest

    m = load_manifest(default_bundle_dir())
    coarse = m.coarse.model_copy(update={"gate": gate})
    fine = m.fine.model_copy(update={"frames_per_snippet": frames_per_snippet}) if m.fine else None
    return m.model_copy(update={"coarse": coarse, "fine": fine})


def test_config_for_bundle_fills_only_what_the_user_left_unset():
    from edge_vad.config import Config, FineConfig
    from edge_vad.runtime.bundle_defaults import config_for_bundle

    manifest = _manifest(SUGGESTION, frames_per_snippet=1)
    cfg = config_for_bundle(Config(), manifest)
    assert (cfg.gate.on_threshold, cfg.gate.off_threshold) == (0.31, 0.22)
    if manifest.fine is not None:
        assert cfg.fine.frames_per_update == 1
        mine = config_for_bundle(Config(fine=FineConfig(frames_per_update=4)), manifest)
        assert mine.fine.frames_per_update == 4
