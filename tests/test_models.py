import pytest
import torch

from fedleak.data import load
from fedleak.errors import FedleakInputError
from fedleak.models import build, load_weights, save_weights


@pytest.mark.parametrize("spec", ["lenet", "convnet:8", "resnet20", "resnet18", "mlp", "mlp:64,32,act=relu"])
@pytest.mark.parametrize("data", ["photos", "digits"])
def test_models_take_input_shape_and_class_count(spec, data):
    ds = load(data)
    model = build(spec, ds.spec, seed=0)
    out = model(ds.inputs([0, 1, 2]))
    assert out.shape == (3, ds.spec.num_classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lenet_has_dlg_architecture_and_init():
    model = build("lenet", load("photos").spec, seed=0)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (12, (5, 5), (2, 2)),
        (12, (5, 5), (2, 2)),
        (12, (5, 5), (1, 1)),
    ]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in model.modules()) == 3
    assert model.fc.in_features == 768
    params = torch.cat([p.flatten() for p in model.parameters()])
    assert params.min() >= -0.5 and params.max() <= 0.5 and params.abs().max() > 0.45  # uniform(-0.5, 0.5)
    torch_init = build("lenet:init=torch", load("photos").spec, seed=0)
    assert torch_init.fc.weight.abs().max() < 0.1


def test_lenet_sees_pixels_as_in_dlgs_code():
    data = load("photos")
    model = build("lenet", data.spec, seed=0)
    plain = build("lenet:input=normalised", data.spec, seed=0)  # same weights, fed what it is given
    x = data.inputs([0, 1])
    assert torch.allclose(model(x), plain(data.pixels([0, 1])), atol=1e-5)  # normalisation undone inside
    assert not torch.allclose(model(x), plain(x), atol=1e-3)


def test_convnet_width_and_plain_mlp():
    spec = load("photos").spec
    assert build("convnet", spec).fc.in_features == 36 * 64
    assert build("convnet:16", spec).fc.in_features == 36 * 16
    mlp = build("mlp", load("digits").spec)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 128), (128, 10)]
    assert any(isinstance(m, torch.nn.Tanh) for m in mlp.modules())


def test_seeded_build_is_reproducible():
    spec = load("digits").spec
    a, b, c = build("mlp", spec, seed=1), build("mlp", spec, seed=1), build("mlp", spec, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.net[1].weight, c.net[1].weight)


def test_bad_specs():
    with pytest.raises(FedleakInputError, match="unknown model"):
        build("nosuch", load("digits").spec)
    with pytest.raises(FedleakInputError, match="takes images"):
        build("lenet", load("breast-cancer").spec)
    with pytest.raises(FedleakInputError):
        build("mlp:abc", load("digits").spec)


def test_safetensors_round_trip_and_refusals(tmp_path):
    spec = load("photos").spec
    a = build("convnet:4", spec, seed=0)
    a.train()
    a(load("photos").inputs(list(range(8))))  # move the BatchNorm running stats
    save_weights(a, tmp_path / "w.safetensors")
    b = load_weights(build("convnet:4", spec, seed=1), tmp_path / "w.safetensors")
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    with pytest.raises(FedleakInputError, match="does not fit"):
        load_weights(build("convnet:8", spec), tmp_path / "w.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(FedleakInputError, match="not a readable safetensors"):
        load_weights(a, tmp_path / "pickle.safetensors")
