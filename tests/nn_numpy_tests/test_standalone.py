"""The exported ``numpy_nn.py`` runs on its own: lab checks and model files in an isolated interpreter."""

import ast
import json
import subprocess
import sys
import textwrap

import numpy as np

from nn_numpy import build_mlp, predict, standalone_source

# Runs inside `python -I` with the tmp dir as cwd; nn_numpy and torch are made unimportable.
CHECK_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys

    sys.modules["nn_numpy"] = None  # any attempt to import these raises ImportError
    sys.modules["torch"] = None
    sys.path.insert(0, os.getcwd())

    import numpy as np
    import numpy.testing as testing

    from numpy_nn import *

    assert os.path.dirname(sys.modules["numpy_nn"].__file__) == os.getcwd()
    for name in ["Linear", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "SE", "BCE",
                 "build_mlp", "predict", "save_model", "load_model"]:
        assert name in globals(), name

    # The lab's checks (rpz-cnn-lab.txt, Part 1).
    linear_layer = Linear(3, 2)
    linear_layer.W = np.array([[1., 0.6], [0.2, -0.2], [-0.6, -1.]])
    linear_layer.b = np.array([[-0.5, 0.5]])
    x_linear = np.array([[-2., -1.2, -0.4], [0.4, 1.2, 2.]])
    testing.assert_array_almost_equal([[-2.5, -0.06], [-1.06, -1.5]], linear_layer.forward(x_linear),
                                      decimal=6)
    dL_wrt_x = linear_layer.backward(np.array([[1., 1.33333333], [1.66666667, 2.]]))
    testing.assert_array_almost_equal([[1.8, -0.06666667, -1.93333333], [2.86666667, -0.06666667, -3.]],
                                      dL_wrt_x, decimal=6)
    testing.assert_array_almost_equal(
        [[[-2., -2.66666667], [-1.2, -1.6], [-0.4, -0.53333333]],
         [[0.66666667, 0.8], [2., 2.4], [3.33333333, 4.0]]], linear_layer.dL_wrt_W, decimal=6)
    testing.assert_array_almost_equal([[[1., 1.33333333]], [[1.66666667, 2.]]], linear_layer.dL_wrt_b,
                                      decimal=6)

    x_act = np.array([[-2., -1.2, -0.4], [0.4, 1.2, 2.]])
    g_act = np.array([[-3., 1.2, -0.5], [-0.4, 2.2, 3.]])
    relu_layer = ReLU()
    testing.assert_array_almost_equal([[0, 0, 0], [0.4, 1.2, 2.]], relu_layer.forward(x_act), decimal=6)
    testing.assert_array_almost_equal([[0., 0., 0.], [-0.4, 2.2, 3.]], relu_layer.backward(g_act), decimal=6)
    sigmoid_layer = Sigmoid()
    testing.assert_array_almost_equal([[0.119203, 0.231475, 0.401312], [0.598688, 0.768525, 0.880797]],
                                      sigmoid_layer.forward(x_act), decimal=6)
    testing.assert_array_almost_equal([[-0.314981, 0.213473, -0.12013], [-0.096104, 0.391368, 0.314981]],
                                      sigmoid_layer.backward(g_act), decimal=6)
    se_layer = SE()
    y = np.linspace(-5, 5, 9)
    se_layer.forward(y, 0.5 * y)
    testing.assert_array_almost_equal([-5., -3.75, -2.5, -1.25, 0., 1.25, 2.5, 3.75, 5.], se_layer.backward(),
                                      decimal=6)

    # Model files.
    model = build_mlp(6, [5, 4], "leaky_relu", init="he", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, 6))
    save_model("model.npz", model, mean=np.arange(6.0))
    loaded, extras = load_model("model.npz")
    testing.assert_array_equal(predict(loaded, x), predict(model, x))
    testing.assert_array_equal(extras["mean"], np.arange(6.0))
    assert "nn_numpy" not in [m for m in sys.modules if sys.modules[m] is not None]
    print(json.dumps(predict(model, x).ravel().tolist()))
    """
)


def test_standalone_source_is_self_contained_python() -> None:
    source = standalone_source()
    tree = ast.parse(source)
    assert ast.get_docstring(tree).startswith("numpy_nn.py")
    imports = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports[0] == "from __future__ import annotations"
    assert len(imports) == len(set(imports))
    modules = {
        (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name).split(".")[0]
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    assert modules <= {"__future__", "collections", "json", "os", "numpy"}
    nested = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert nested == []
    assert all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body[1 : 1 + len(imports)])


def test_standalone_file_runs_lab_checks_in_isolated_interpreter(tmp_path) -> None:
    (tmp_path / "numpy_nn.py").write_text(standalone_source(), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-I", "-c", CHECK_SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    # Same seed, same numbers as the package.
    model = build_mlp(6, [5, 4], "leaky_relu", init="he", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, 6))
    np.testing.assert_array_equal(json.loads(completed.stdout), predict(model, x).ravel())
