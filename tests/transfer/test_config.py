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
    assert [config[s]["max_epochs"] for s in ("vae", "mlp", "finetune", "one_step")] == [3, 3, 3, 3]
    assert default_config().with_overrides({"vae": {"max_epochs": 2}}).with_max_epochs(5)["vae"]["max_epochs"] == 2
    assert config["finetune"]["epochs"] == 0
    with pytest.raises(ConfigError):
        default_config().with_max_epochs(0)


def test_toml_round_trip():
    config = default_config().with_overrides({"mlp": {"hidden": [7, 9]}, "search": {"learning_rate": [1e-5]}})
    import tomllib
    assert TransferConfig(tomllib.loads(to_toml(config.to_dict()))) == config


# broken configuration files: each ends in a ConfigError naming the file and the field
BROKEN_CONFIGS = [
    ("[vae]\nlearning_rate = nan\n", "vae.learning_rate: expected a finite number"),
    ("[mlp]\nlearning_rate = inf\n", "mlp.learning_rate: expected a finite number"),
    ("[vae]\nhidden = [100000000, 512]\n", "vae.hidden: 100000000 is outside the sane range"),
    ("[mlp]\nhidden = [128, 0]\n", "mlp.hidden must be a non-empty list of positive sizes"),
    ("[vae]\nlatent = 1000000\n", "vae.latent: 1000000 is outside"),
    ("[vae]\nbatch_size = 10000000000\n", "vae.batch_size"),
    ("[vae]\nhidden = [" + ", ".join(["8"] * 100) + "]\n", "vae.hidden: at most 64 items"),
    ("[vae]\nhidden = 'big'\n", "vae.hidden: expected a list"),
    ("[vae]\nhidden = [1.5]\n", r"vae.hidden[0]: expected an integer"),
    ("[vae]\nl2 = -1.0\n", "vae.l2: -1.0 is outside"),
    ("[vae]\nnegative_slope = 1e400\n", "vae.negative_slope: expected a finite number"),
    ("[kmeans]\nk_candidates = [1, 3]\n", "kmeans.k_candidates: 1 is outside"),
    ("[data]\nchunk_spots = -5\n", "data.chunk_spots must be positive"),
    ("[baselines]\nmodels = 3\n", "baselines.models: expected a list"),
    ("[baselines]\ntrust_day_change = 2.0\n", "baselines.trust_day_change: 2.0 is outside"),
    ("vae = 3\n", "vae: expected a table"),
    ("[vae]\nhidden = " + "[" * 2000 + "]" * 2000 + "\n", "not valid TOML|expected an integer|vae.hidden"),
    ("\xff\xfe", "not valid TOML|cannot be read"),
]


@pytest.mark.parametrize("text, message", BROKEN_CONFIGS, ids=[str(i) for i in range(len(BROKEN_CONFIGS))])
def test_a_corpus_of_broken_configs_gives_named_errors_not_tracebacks(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape") if text != "\xff\xfe" else b"\xff\xfe")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    import re
    assert re.search(message.replace("[", r"\[").replace("]", r"\]") if "|" not in message else message,
                     str(info.value)), str(info.value)
    assert str(path) in str(info.value)


def test_config_json_from_a_bundle_is_checked_the_same_way():
    from transfer.config import config_from_json
    for text, field in (('{"vae": {"learning_rate": NaN}}', "finite"), ("[" * 100_000, "not valid JSON"),
                        ("[1]", "JSON object"), ('{"mlp": {"hidden": [100000000]}}', "mlp.hidden")):
        with pytest.raises(ConfigError, match=field):
            config_from_json(text)
