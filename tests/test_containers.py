"""nn.ModuleList / nn.ModuleDict, the error for layers kept in a plain list, and
Module.summary() (issue 17)."""

from __future__ import annotations

from typing import Any

import pytest

from nnbackend import nn, optim
from nnbackend.errors import ArgumentError


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 2), "b": nn.Linear(4, 1)})

    def forward(self, x: Any) -> Any:
        for block in self.blocks:
            x = block(x)
        return self.heads["a"](x)


def test_containers_register_their_layers(xp: Any) -> None:
    model = Tower()
    names = [name for name, _ in model.named_parameters()]
    assert names == [
        "blocks.0.weight",
        "blocks.0.bias",
        "blocks.1.weight",
        "blocks.1.bias",
        "heads.a.weight",
        "heads.a.bias",
        "heads.b.weight",
        "heads.b.bias",
    ]
    opt = optim.SGD(model.parameters(), lr=0.1)
    assert len(opt.params) == 8
    model.blocks.append(nn.Linear(4, 4))
    model.heads["c"] = nn.Linear(4, 3)
    assert len(model.blocks) == 3 and list(model.heads) == ["a", "b", "c"]
    assert "c" in model.heads and len(list(model.parameters())) == 12
    assert isinstance(model.blocks[-1], nn.Linear) and len(model.blocks[:2]) == 2
    assert tuple(model(xp.ones((3, 4))).shape) == (3, 2)
    sd = model.state_dict()
    other = Tower()
    other.blocks.append(nn.Linear(4, 4))
    other.heads["c"] = nn.Linear(4, 3)
    other.load_state_dict(sd)
    with pytest.raises(KeyError, match="'d' is not in this ModuleDict"):
        model.heads["d"]
    with pytest.raises(KeyError, match="keys"):
        model.heads["keys"] = nn.Linear(1, 1)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        model.blocks.append(lambda x: x)  # type: ignore[arg-type]


@pytest.mark.parametrize("container", [list, tuple, dict])
def test_a_plain_list_of_layers_is_refused(container: Any) -> None:
    class Forgetful(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = [nn.Linear(2, 2), nn.Linear(2, 2)]
            self.layers = dict(enumerate(layers)) if container is dict else container(layers)

    kind = "ModuleDict" if container is dict else "ModuleList"
    with pytest.raises(TypeError, match=rf"Forgetful.layers is a plain .*nn\.{kind}"):
        Forgetful()

    class Fine(nn.Module):
        def __init__(self) -> None:
            self.sizes = container([1, 2]) if container is not dict else {"a": 1}

    Fine()  # lists of plain values stay allowed


def test_summary_shapes_counts_and_bytes(xp: Any, dtype: str) -> None:
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2, bias=False))
    text = model.summary(input_shape=(3,))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "shape", "parameters"]
    assert lines[2].split() == ["(model)", "Sequential", "(1,", "2)", "30"]
    assert lines[3].split() == ["0", "Linear", "(1,", "5)", "20"]
    assert lines[4].split() == ["1", "ReLU", "(1,", "5)", "0"]
    assert lines[5].split() == ["2", "Linear", "(1,", "2)", "10"]
    size = {"float64": 8, "float32": 4, "float16": 2}[dtype]
    assert lines[-1] == f"parameters: 30 (trainable 30); {dtype}: {30 * size} bytes"
    batch = model.summary(xp.ones((7, 3)))
    assert "(7, 2)" in batch
    assert model.training  # the mode is restored
    assert type(model).__call__ is nn.Sequential.__dict__["__call__"]  # the hooks are gone
    with pytest.raises(ArgumentError, match="not both"):
        model.summary(xp.ones((1, 3)), input_shape=(3,))


def test_summary_without_an_input_lists_counts_only() -> None:
    text = nn.Sequential(nn.Linear(2, 2)).summary()
    assert "output shape" not in text and text.endswith("float64: 48 bytes")
