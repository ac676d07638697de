"""cnnkit.transfer: stages, freezing (weights and BN statistics untouched), new heads, channel adaptation,
multi-stage features, the strategies through the one training loop, the advice table, and the CLI."""

import json

import pytest
import torch

from cnnkit.card import build_record, card_of
from helpers import bar_dataset
from torch import nn

from cnnkit import TrainConfig, Trainer, create_model
from cnnkit.cli import main
from cnnkit.errors import CnnkitError, ImageError, ShapeError, UnknownNameError
from cnnkit.transfer import (HeadNotFoundError, adapt_input_channels, advise, extract_features, feature_bundle,
                             fit_linear_probe,
                             finetune, freeze, hold_batchnorm_statistics, is_frozen, replace_head,
                             stage_lr_multipliers, stage_names, stage_outputs, stages, train_on_features, unfreeze,
                             upper_stages)

# (model, kwargs, input size): small enough to run every stage in well under a second each.
CHAIN_MODELS = [
    ("lenet5", {}, 32), ("lenet5_relu", {}, 32), ("fashion_cnn", {}, 28), ("resnet20", {}, 32),
    ("resnet18", {"num_classes": 10}, 32), ("googlenet", {"num_classes": 10}, 40),
    ("efficientnet_lite0", {"num_classes": 10}, 32), ("xception", {"num_classes": 10, "middle_repeats": 1}, 71),
    ("conv_autoencoder", {}, 28),
]


def quick(epochs=1, **kw):
    return TrainConfig(epochs=epochs, lr=kw.pop("lr", 0.05), batch_size=32, schedule=kw.pop("schedule", "constant"),
                       progress=False, **kw)


@pytest.mark.parametrize("name,kwargs,size", CHAIN_MODELS)
def test_running_the_stages_in_order_is_the_forward_pass(name, kwargs, size):
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    x = torch.randn(2, model.cnnkit_config["in_channels"], size, size)
    with torch.no_grad():
        y = x
        for stage in stages(model):
            y = stage.forward(y)
        assert torch.allclose(model(x), y, atol=1e-5)
    # every parameter belongs to exactly one stage, so freezing by stage covers the whole model
    for param_name, _ in model.named_parameters():
        module = param_name.rsplit(".", 1)[0]
        assert sum(s.owns(module) for s in stages(model)) == 1, param_name


def test_stage_names_follow_the_papers():
    assert stage_names(create_model("efficientnet_lite0")) == ["stem"] + [f"stage{i}" for i in range(2, 9)] + [
        "head", "classifier"]
    assert stage_names(create_model("resnet18")) == ["stem", "layer1", "layer2", "layer3", "layer4", "classifier"]
    assert stage_names(create_model("unet", base_channels=4))[:2] == ["down1", "down2"]
    assert upper_stages(create_model("resnet20"), 2) == ["layer2", "layer3"]
    with pytest.raises(UnknownNameError, match="Did you mean layer4"):
        freeze(create_model("resnet18"), until="layer5")


def test_stage_outputs_of_a_graph_model_come_from_hooks():
    model = create_model("unet", base_channels=4, padding=True).eval()
    outputs = stage_outputs(model, torch.randn(1, 1, 32, 32), ["down1", "down2"])
    assert set(outputs) == {"down1", "down2"}
    assert outputs["down1"].shape == (1, 4, 32, 32) and outputs["down2"].shape == (1, 8, 16, 16)


def small_bn_net(in_channels=1, num_classes=2):
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=num_classes, in_channels=in_channels)


def test_freeze_leaves_weights_and_batchnorm_statistics_unchanged():
    data = bar_dataset(n_train=64, n_test=16, size=16)
    model = small_bn_net()
    frozen = freeze(model)
    assert frozen == ["stem", "layer1", "layer2", "layer3"] and is_frozen(model, "layer3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, data, quick(epochs=2)).fit()
    after = model.state_dict()
    base = [k for k in before if not k.startswith("head.")]
    assert any("running_mean" in k for k in base) and any("num_batches_tracked" in k for k in base)
    assert all(torch.equal(before[k], after[k]) for k in base)
    assert not torch.equal(before["head.fc.weight"], after["head.fc.weight"])
    model.train()  # what the Trainer does every epoch: frozen BN layers must not follow
    assert not model.layer1[0].bn1.training and model.head.training


def test_frozen_batchnorm_updates_its_statistics_only_when_asked():
    data = bar_dataset(n_train=32, n_test=16, size=16)
    model = small_bn_net()
    freeze(model, eval_mode=False)
    before = model.bn1.running_mean.clone()
    Trainer(model, data, quick()).fit()
    assert not torch.equal(before, model.bn1.running_mean)
    assert not model.bn1.weight.requires_grad


def test_held_batchnorm_keeps_its_statistics_but_learns_its_scale():
    data = bar_dataset(n_train=32, n_test=16, size=16)
    model = small_bn_net()
    assert hold_batchnorm_statistics(model) == 19
    mean, scale = model.bn1.running_mean.clone(), model.bn1.weight.clone()
    Trainer(model, data, quick()).fit()
    assert torch.equal(mean, model.bn1.running_mean) and not torch.equal(scale, model.bn1.weight)


def test_unfreeze_restores_training_from_a_stage_up():
    model = small_bn_net()
    freeze(model)
    assert unfreeze(model, from_="layer3") == ["layer3", "classifier"]
    model.train()
    assert model.layer3[0].bn1.training and not model.layer2[0].bn1.training
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert not any(p.requires_grad for p in model.layer2.parameters())


def test_replace_head_gives_the_requested_classes_and_is_saved_in_the_config():
    model = create_model("efficientnet_lite0", num_classes=1000)
    old_stem = model._conv_stem.weight.clone()
    replace_head(model, 7)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7) and model.cnnkit_config["num_classes"] == 7
    assert torch.equal(model._conv_stem.weight, old_stem)
    rebuilt = create_model("efficientnet_lite0", num_classes=model.cnnkit_config["num_classes"])
    rebuilt.load_state_dict(model.state_dict())  # a checkpoint of the new model loads into a fresh build
    googlenet = replace_head(create_model("googlenet", num_classes=1000), 5)
    assert googlenet.fc.out_features == googlenet.aux1.fc2.out_features == googlenet.aux2.fc2.out_features == 5


def test_replace_head_explains_what_it_cannot_replace():
    with pytest.raises(HeadNotFoundError, match="output='linear'"):
        replace_head(create_model("lenet5"), 3)

    class Gap(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)

    with pytest.raises(HeadNotFoundError, match="Conv2d, not a linear layer"):
        replace_head(Gap(), 3)


@pytest.mark.parametrize("mode", ["sum", "average"])
def test_grey_adaptation_matches_the_rgb_network_on_a_repeated_grey_image(mode):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=10).eval()
    grey = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = model(grey.repeat(1, 3, 1, 1) / (3 if mode == "average" else 1))
        adapt_input_channels(model, 1, mode)
        assert torch.allclose(model(grey), expected, atol=1e-4)
    assert build_record(model)["in_channels"] == card_of(model).in_channels == 1


def test_extract_features_one_pass_for_many_stages():
    model = small_bn_net(in_channels=3, num_classes=10)
    images = torch.rand(5, 3, 32, 32)  # already preprocessed floats pass through as they are
    feats = extract_features(model, images, ["layer1", "layer3"], batch_size=2)
    assert feats["layer1"].shape == (5, 16) and feats["layer3"].shape == (5, 64)
    maps = extract_features(model, images, "layer2", pool=False)
    assert maps.shape == (5, 32, 16, 16)
    assert torch.allclose(maps.mean(dim=(2, 3)), extract_features(model, images, "layer2"), atol=1e-5)
    with torch.no_grad():
        direct = model.eval().layer1(model.relu(model.bn1(model.conv1(images))))
    assert torch.allclose(feats["layer1"], direct.mean(dim=(2, 3)), atol=1e-5)
    with pytest.raises(CnnkitError, match="normalisation"):
        extract_features(model, images.mul(255).to(torch.uint8), "layer1")


def test_two_phase_trains_the_head_then_the_top_stages_at_a_tenth_of_the_lr():
    data = bar_dataset(n_train=64, n_test=32, size=16)
    model = small_bn_net()
    seen = []

    def watch(trainer, metrics):
        trainable = {n.split(".")[0] for n, p in trainer.model.named_parameters() if p.requires_grad}
        seen.append(({g["lr"] for g in trainer.optimizer.param_groups}, trainable))

    stem_before = model.conv1.weight.clone()
    result = finetune(model, data, "two-phase", quick(lr=0.05), top_stages=1, callbacks=[watch])
    assert len(result["phases"]) == 2
    (head_lrs, head_trainable), (tuned_lrs, tuned_trainable) = seen
    assert head_lrs == {0.05} and len(tuned_lrs) == 1 and tuned_lrs.pop() == pytest.approx(0.005)
    assert head_trainable == {"head"} and tuned_trainable == {"head", "layer3"}
    assert torch.equal(stem_before, model.conv1.weight)


def test_discriminative_learning_rates_decay_down_the_stages():
    model = small_bn_net()
    multipliers = stage_lr_multipliers(model, decay=0.5)
    assert multipliers["head."] == 1 and multipliers["layer3."] == 0.5 and multipliers["conv1."] == 0.0625
    seen = []
    finetune(model, bar_dataset(n_train=32, n_test=16, size=16), "full", quick(lr=0.1), lr_decay=0.5,
             callbacks=[lambda t, m: seen.append(sorted(g["lr"] for g in t.optimizer.param_groups))])
    assert seen[0][0] == pytest.approx(0.00625) and seen[0][-1] == pytest.approx(0.1)


def test_linear_strategy_probes_each_stage():
    data = bar_dataset(n_train=64, n_test=32, size=16)
    result = finetune(small_bn_net(), data, "linear", quick())
    assert [r["stage"] for r in result["probes"]] == ["stem", "layer1", "layer2", "layer3"]
    assert all(0 <= r["accuracy"] <= 100 for r in result["probes"])


def test_training_on_cached_features_updates_the_model_itself():
    data = bar_dataset(n_train=64, n_test=32, size=16)
    model = small_bn_net()
    replace_head(model, 2)
    freeze(model, until="layer2")
    maps = {split: extract_features(model, getattr(data, split).images, "layer2", pool=False,
                                    preprocess=lambda x: (x.float() / 255 - 0.1) / 0.2) for split in ("train", "test")}
    bundle = feature_bundle("bars layer2", maps["train"], data.train.labels, maps["test"], data.test.labels,
                            data.classes)
    before = model.layer3[0].conv1.weight.clone()
    trainer = train_on_features(model, "layer2", bundle, quick(epochs=2))
    summary = trainer.fit()
    assert not torch.equal(before, model.layer3[0].conv1.weight) and summary["epochs_completed"] == 2
    model.eval()
    with torch.no_grad():  # the tail's test accuracy is the whole model's on the images
        logits = model((data.test.images.float() / 255 - 0.1) / 0.2)
    whole = 100.0 * (logits.argmax(1) == data.test.labels).float().mean().item()
    assert trainer.evaluate(bundle.test)["acc"] == pytest.approx(whole)
    with pytest.raises(CnnkitError, match="float"):
        feature_bundle("bad", data.train.images, data.train.labels, maps["test"], data.test.labels, data.classes)


def test_advice_follows_the_notes_table():
    assert advise(1000, "similar").strategy == "linear" and advise(1000, "similar").stages == "top"
    assert "different stages" in advise(1000, "very different").recommendation
    assert advise(200_000, "similar").strategy == "two-phase"
    assert advise(200_000, 0.1).strategy == "full" and advise(200_000, 0.1).reason
    with pytest.raises(CnnkitError, match="similar"):
        advise(10, "alike")


def test_channel_and_class_mismatches_are_explained():
    data = bar_dataset(n_train=16, n_test=8, size=16)
    rgb_data = bar_dataset(n_train=16, n_test=8, size=16)
    rgb_data.train.images = rgb_data.train.images.repeat(1, 3, 1, 1)
    with pytest.raises(ShapeError, match="repeat"):
        finetune(small_bn_net(in_channels=1), rgb_data, "head", quick())
    with pytest.raises(CnnkitError, match="predicts 10 classes but bars has 2"):
        finetune(small_bn_net(num_classes=10), data, "head", quick(), new_head=False)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_finetune_from_a_run_folder_and_predict_with_its_checkpoint(tmp_path, capsys):
    from cnnkit.train.checkpoint import save_model_checkpoint

    source = tmp_path / "source"
    model = small_bn_net(in_channels=3, num_classes=10)
    save_model_checkpoint(source, model, {"dataset": "x", "classes": [str(i) for i in range(10)],
                                          "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": None},
                                          "image_shape": [3, 32, 32]})
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(10):
            colour = (255, 40 * i % 255, 0) if cls == "a" else (0, 40 * i % 255, 255)
            Image.new("RGB", (32, 32), colour).save(tmp_path / "imgs" / cls / f"{i}.png")
    code, out, err = run(capsys, "finetune", "--from", source, "--data", f"imagefolder:{tmp_path / 'imgs'}",
                         "--strategy", "two-phase", "--top-stages", "1", "--epochs", "1", "--batch-size", "8",
                         "--workers", "0", "--out", tmp_path / "tuned", "--no-progress")
    assert code == 0, err
    assert "two-phase: test accuracy" in out
    meta = json.loads((tmp_path / "tuned" / "checkpoint.json").read_text())
    assert meta["model"]["num_classes"] == 2 and meta["classes"] == ["a", "b"]
    code, out, err = run(capsys, "predict", tmp_path / "tuned", tmp_path / "imgs" / "a" / "1.png", "--json")
    assert code == 0 and {n for n, _ in json.loads(out)[str(tmp_path / "imgs" / "a" / "1.png")]} == {"a", "b"}


def test_cli_finetune_source_errors(capsys, tmp_path):
    code, _, err = run(capsys, "finetune", "--from", "no_such_thing", "--data", "mnist")
    assert code == 2 and "MODEL:TAG" in err
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    code, _, err = run(capsys, "finetune", "--from", weights, "--data", "mnist")
    assert code == 2 and "--model NAME" in err


def test_cli_predict_with_pretrained_imagenet_weights(capsys, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), (20, 120, 200)).save(photo)
    code, out, err = run(capsys, "predict", "--model", "efficientnet_lite0", "--pretrained", "imagenet", photo,
                         "--json")
    assert code == 0, err
    ranked = json.loads(out)[str(photo)]
    assert len(ranked) == 5 and all(isinstance(n, str) and 0 <= p <= 1 for n, p in ranked)
    assert ranked == sorted(ranked, key=lambda r: -r[1])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "predict", "--model", "efficientnet_lite0", "--pretrained", "imagenet", bad)
    assert code == 2 and "bad.jpg is not a readable image" in err


def test_classify_images_refuses_models_without_class_names():
    from cnnkit.transfer import classify_images

    with pytest.raises(CnnkitError, match="pretrained=TAG"):
        classify_images(create_model("resnet20"), ["x.png"])
    with pytest.raises(ImageError):
        classify_images(create_model("efficientnet_lite0", pretrained="imagenet"), ["/no/such/photo.jpg"])


def test_probe_cross_validation_keeps_the_views_of_an_image_together():
    # Random labels: nothing to learn, but each image's second view is nearly a copy of its first. Folds that
    # split the views reward memorising; folds grouped by image see chance, as the test set would.
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(90, 40, generator=generator)
    views = torch.cat([images, images + 0.01 * torch.randn(90, 40, generator=generator)])
    labels = torch.randint(0, 3, (90,), generator=generator).repeat(2)
    test_x, test_y = torch.randn(60, 40, generator=generator), torch.randint(0, 3, (60,), generator=generator)
    split = fit_linear_probe(views, labels, test_x, test_y, c_values=(1e-3, 100.0))
    grouped = fit_linear_probe(views, labels, test_x, test_y, c_values=(1e-3, 100.0),
                               groups=torch.arange(90).repeat(2))
    assert split["cv_accuracy"] > 65 and split["C"] == 100.0
    assert grouped["cv_accuracy"] < 50
    with pytest.raises(CnnkitError, match="groups"):
        fit_linear_probe(views, labels, test_x, test_y, groups=torch.arange(90))


def test_probe_averages_the_probabilities_of_test_views():
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(3, 8, generator=generator) * 3
    labels = torch.arange(3).repeat(40)
    train_x = centres[labels] + torch.randn(120, 8, generator=generator)
    test_y = torch.arange(3).repeat(20)
    test_x = centres[test_y] + 6 * torch.randn(60, 8, generator=generator)
    one = fit_linear_probe(train_x, labels, test_x, test_y, c_values=(1.0,))
    assert one["test_views"] == 1 and one["cv_accuracy"] is None
    probabilities = one["probabilities"]
    assert probabilities.shape == (60, 3) and torch.allclose(probabilities.sum(1), torch.ones(60), atol=1e-5)
    assert 100 * (probabilities.argmax(1) == test_y).float().mean().item() == pytest.approx(one["accuracy"])
    assert fit_linear_probe(train_x, labels, test_x, test_y, c_values=(1.0,), test_views=[test_x])["accuracy"] \
        == one["accuracy"]
    clean = centres[test_y]  # a second, noiseless view pulls every averaged prediction to its class
    assert fit_linear_probe(train_x, labels, test_x, test_y, c_values=(1.0,),
                            test_views=[clean, clean])["accuracy"] > one["accuracy"]
    with pytest.raises(CnnkitError, match="same images"):
        fit_linear_probe(train_x, labels, test_x, test_y, test_views=[test_x[:10]])


def test_features_in_bf16_are_close_to_fp32():
    torch.manual_seed(0)
    model = small_bn_net(in_channels=3, num_classes=10)
    images = torch.rand(4, 3, 32, 32)
    exact = extract_features(model, images, "layer3")
    fast = extract_features(model, images, "layer3", precision="bf16")
    assert fast.dtype == torch.float32 and torch.allclose(fast, exact, rtol=0.05, atol=0.02)
    with pytest.raises(CnnkitError, match="precision"):
        extract_features(model, images, "layer3", precision="fp16")
