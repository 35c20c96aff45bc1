"""Configuration: paper defaults, overrides, clear errors."""

import pytest

from transfer.config import ConfigError, TransferConfig, default_config, load_config, to_toml


def test_defaults_are_the_papers():
    config = default_config()
    assert config["vae"]["hidden"] == [1024, 512] and config["vae"]["latent"] == 64
    assert config["vae"]["epochs"] == 50 and config["vae"]["batch_size"] == 128
    assert config["vae"]["learning_rate"] == 1e-4 and config["vae"]["l2"] == 1e-6
    assert (config["vae"]["kl_max"], config["vae"]["kl_cycles"]) == (0.5, 4)
    assert config["mlp"]["hidden"] == [128, 512] and config["mlp"]["epochs"] == 100
    assert config["baselines"]["pls_components"] == 16 and config["baselines"]["knn_neighbors"] == 10


def test_file_overrides_a_subset(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text("[vae]\nhidden = [64, 32]\nlearning_rate = 1e-3\n")
    config = load_config(path)
    assert config["vae"]["hidden"] == [64, 32] and config["vae"]["learning_rate"] == 1e-3
    assert config["vae"]["latent"] == 64


@pytest.mark.parametrize("text, message", [
    ("[vae]\nhiden = [1]\n", "unknown configuration key 'vae.hiden'"),
    ("[vea]\n", "unknown configuration key 'vea'"),
    ("[vae]\nepochs = 'ten'\n", "vae.epochs: expected an integer"),
    ("[vae]\nbatch_size = 0\n", "vae.batch_size must be positive"),
    ("[vae\n", "not valid TOML"),
    ("[data]\nscaling = 'robust'\n", "data.scaling must be one of pixel, global"),
])
def test_bad_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nowhere.toml")


def test_max_epochs_caps_every_phase():
    config = default_config().with_max_epochs(3)
    assert [config[s]["epochs"] for s in ("vae", "mlp", "one_step")] == [3, 3, 3]
    assert config["finetune"]["epochs"] == 0
    with pytest.raises(ConfigError):
        default_config().with_max_epochs(0)


def test_toml_round_trip():
    config = default_config().with_overrides({"mlp": {"hidden": [7, 9]}, "search": {"learning_rate": [1e-5]}})
    import tomllib
    assert TransferConfig(tomllib.loads(to_toml(config.to_dict()))) == config
