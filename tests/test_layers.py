"""Layer roles found from the module graph: the same layers as ResNet names picked before, and the
equivalents on other architectures."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from unlearnx.layers import model_roles  # noqa: E402
from unlearnx.methods import cfw, kde, reinit_cycles, rni  # noqa: E402
from unlearnx.models import build_model  # noqa: E402


def _old_layer_pool(model, include_bn=False):
    """reinit-cycles' pool as it was chosen by name."""
    kinds = (nn.Conv2d, nn.BatchNorm2d) if include_bn else (nn.Conv2d,)
    return [name for name, m in model.named_modules()
            if isinstance(m, kinds) and "downsample" not in name.split(".") and name.split(".")[0] != "fc"]


@pytest.mark.parametrize("arch,in_channels", [("resnet18", 3), ("small", 3), ("small", 1)])
def test_resnet_roles_are_the_layers_the_names_gave(arch, in_channels):
    model = build_model(arch, 10, in_channels)
    roles = model_roles(model)
    assert roles.stem == "conv1" and roles.head == "fc" and roles.num_classes == 10
    assert roles.shortcuts == tuple(n for n, _ in model.named_modules() if "downsample." in n)
    assert set(roles.main_path_norms()) == {n for n, m in model.named_modules()
                                            if isinstance(m, nn.BatchNorm2d) and "bn" in n}
    # reinit-cycles: the same pool, with and without BN
    for include_bn in (False, True):
        assert [n for n, _ in reinit_cycles.layer_pool(model, include_bn)] == _old_layer_pool(model, include_bn)
    # cfw: the port's top-level conv* children
    old = [n for n, m in model.named_children() if "conv" in n and hasattr(m, "weight")]
    assert [n for n, _ in cfw.confusable_convs(model)] == old == ["conv1"]
    # rni: the port's "bn" in name
    names = [n for n, _ in model.named_parameters()]
    assert rni.norm_parameters(model) == {n for n in names if "bn" in n}
    recipe = rni.RNIRecipe()
    old_drawable = [n for n in names if "bn" not in n]
    chosen = set(rni.pick(old_drawable, recipe.layer_select, torch.Generator().manual_seed(5)))
    old_selection = [n for n in names if n in chosen or "bn" in n]
    assert rni.select_trainable(model, recipe, torch.Generator().manual_seed(5)) == old_selection


def test_kde_resets_exactly_the_stem_and_the_head_of_a_resnet():
    model = build_model("small", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kde.reset_first_and_last(model)
    changed = {k.rsplit(".", 1)[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"conv1", "fc"}


def test_roles_on_other_architectures():
    from torchvision.models import VisionTransformer, mobilenet_v3_small

    mobile = model_roles(mobilenet_v3_small(num_classes=7), torch.zeros(2, 3, 32, 32))
    assert (mobile.stem, mobile.head, mobile.shortcuts, mobile.num_classes) == ("features.0.0", "classifier.3", (), 7)
    vit = VisionTransformer(image_size=16, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16,
                            num_classes=5)
    roles = model_roles(vit, torch.zeros(2, 3, 16, 16))
    assert (roles.stem, roles.head, roles.shortcuts) == ("conv_proj", "heads.head", ())  # the patch embedding
    assert all("ln" in n for n in roles.main_path_norms())


class _ConvHead(nn.Module):
    """Logits from a 1x1 conv and pooling: no linear head, a projection shortcut the names do not tell."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1))
        self.side = nn.Conv2d(8, 16, 1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = self.b(x) + self.side(x)
        return self.out(x).mean((2, 3))


def test_shortcut_found_from_the_graph_and_a_missing_head_is_refused_before_any_change():
    from unlearnx.api import make_context
    from unlearnx.methods import make_recipe, run_method

    model = _ConvHead()
    roles = model_roles(model, torch.zeros(2, 3, 8, 8))
    assert roles.stem == "a" and roles.head is None and roles.shortcuts == ("side",)
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    batches = [(x, y)]
    ctx = make_context(model, batches, batches)
    assert ctx.num_classes == 4  # from the logits, not from an `fc` attribute
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="kde needs a classifier head"):
        run_method(model, ctx, "kde", make_recipe("kde"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_model_whose_logits_do_not_match_the_classes_is_refused():
    from unlearnx.api import make_context
    from unlearnx.methods import make_recipe, run_method

    model = build_model("small", 3)
    batches = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 4]))]
    ctx = make_context(model, batches, batches, num_classes=5)
    with pytest.raises(ValueError, match="outputs 3 logits per example, but the data has 5 classes"):
        run_method(model, ctx, "finetune", make_recipe("finetune"))
