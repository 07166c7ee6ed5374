"""Optional ONNX export of a registered model (`registry.export_onnx: true`; extra `gauntlet[onnx]`).

skl2onnx converts the scikit-learn pipeline, onnxmltools the LightGBM and XGBoost boosters, CatBoost's own
converter its models; gauntlet's own transformers (column groups, median imputer, infinite-to-missing) get
converters of their own.
What has no converter (category levels as text, date parts, calibrators) is not exported, the reason
recorded. An export is kept only when onnxruntime agrees with the original on every label and on every
probability within `PARITY_TOLERANCE`; the figures go into the version's metadata.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd

PARITY_TOLERANCE = 2e-3  # above the float32 drift of LightGBM's ONNX trees (up to 8e-4)
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def available() -> bool:
    try:
        import onnxmltools  # noqa: F401
        import onnxruntime  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError:
        return False
    return True


_REGISTERED: list[Any] = []


def _register_converters() -> type:
    """The converters skl2onnx lacks (once per process); returns the infinite-to-missing marker class."""
    if _REGISTERED:
        return _REGISTERED[0]
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxConcat, OnnxExp, OnnxIdentity, OnnxMul
    from skl2onnx.common.data_types import FloatTensorType
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.proto import onnx_proto
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.compose import TransformedTargetRegressor
    from xgboost import XGBClassifier, XGBRegressor

    from tasks.ml.preprocessing import ColumnGroups, MedianImputer
    from tasks.ml.regression import TargetTransformed

    class InfToNan(TransformerMixin, BaseEstimator):
        """Stands for FunctionTransformer(inf_to_nan) in the copy that is converted."""

        def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
            return np.asarray(self.feature_names_in_ if input_features is None else input_features, dtype=object)

    def shape(operator: Any) -> None:
        operator.outputs[0].type = FloatTensorType([None, operator.raw_operator.n_features_in_])

    def convert(scope: Any, operator: Any, container: Any) -> None:
        source, isinf, nan = operator.inputs[0].full_name, scope.get_unique_variable_name("isinf"), \
            scope.get_unique_variable_name("nan")
        container.add_node("IsInf", [source], [isinf], name=scope.get_unique_operator_name("IsInf"))
        container.add_initializer(nan, onnx_proto.TensorProto.FLOAT, [], [float("nan")])
        container.add_node("Where", [isinf, nan, source], [operator.outputs[0].full_name],
                           name=scope.get_unique_operator_name("Where"))

    update_registered_converter(InfToNan, "GauntletInfToNan", shape, convert)

    def width(operator: Any) -> None:  # float outputs, one column per output feature name
        operator.outputs[0].type = FloatTensorType([None, len(operator.raw_operator.get_feature_names_out())])

    def convert_imputer(scope: Any, operator: Any, container: Any) -> None:
        imputer, source, out = operator.raw_operator, operator.inputs[0].full_name, operator.outputs[0].full_name
        imputed = out if imputer.indicator_ is None else scope.get_unique_variable_name("imputed")
        container.add_node("Imputer", [source], [imputed], op_domain="ai.onnx.ml",
                           name=scope.get_unique_operator_name("Imputer"),
                           imputed_value_floats=imputer.statistics_.astype(np.float32).tolist(),
                           replaced_value_float=float("nan"))
        if imputer.indicator_ is not None:  # then 1.0/0.0 for missing, for the columns seen missing at fit
            isnan, flags, columns, picked = map(scope.get_unique_variable_name, ("isnan", "flags", "cols", "ind"))
            container.add_node("IsNaN", [source], [isnan], name=scope.get_unique_operator_name("IsNaN"))
            container.add_node("Cast", [isnan], [flags], to=onnx_proto.TensorProto.FLOAT,
                               name=scope.get_unique_operator_name("Cast"))
            features = [int(j) for j in imputer.indicator_.features_]
            container.add_initializer(columns, onnx_proto.TensorProto.INT64, [len(features)], features)
            container.add_node("Gather", [flags, columns], [picked], axis=1,
                               name=scope.get_unique_operator_name("Gather"))
            container.add_node("Concat", [imputed, picked], [out], axis=1,
                               name=scope.get_unique_operator_name("Concat"))

    def convert_groups(scope: Any, operator: Any, container: Any) -> None:
        # One input per column (a DataFrame's): each group takes its own columns, by name.
        opv, inputs = container.target_opset, {v.raw_name: v for v in operator.inputs}
        blocks = []
        for _, transformer, columns in operator.raw_operator.transformers_:
            selected = [inputs[c] for c in columns]
            block_in = selected[0] if len(selected) == 1 else OnnxConcat(*selected, axis=1, op_version=opv)
            blocks.append(OnnxSubEstimator(transformer, block_in, op_version=opv))
        out = blocks[0] if len(blocks) == 1 else OnnxConcat(*blocks, axis=1, op_version=opv)
        OnnxIdentity(out, op_version=opv, output_names=operator.outputs[:1]).add_to(scope, container)

    update_registered_converter(MedianImputer, "GauntletMedianImputer", width, convert_imputer)
    update_registered_converter(ColumnGroups, "GauntletColumnGroups", width, convert_groups)
    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                convert_lightgbm, options=options)
    update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options=options)
    update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                convert_lightgbm)
    from catboost import CatBoostClassifier, CatBoostRegressor
    from skl2onnx.common.data_types import Int64TensorType, guess_tensor_type

    def parse_catboost_classifier(scope: Any, model: Any, inputs: list, custom_parsers: Any = None) -> list:
        # skl2onnx does not see CatBoost as a classifier: declare its two outputs (labels, probabilities).
        operator = scope.declare_local_operator("GauntletCatBoostClassifier", model)
        operator.inputs = inputs
        operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
        operator.outputs.append(scope.declare_local_variable("probabilities", guess_tensor_type(inputs[0].type)))
        return operator.outputs

    update_registered_converter(CatBoostClassifier, "GauntletCatBoostClassifier",
                                calculate_linear_classifier_output_shapes, convert_catboost,
                                parser=parse_catboost_classifier, options=options)
    update_registered_converter(CatBoostRegressor, "GauntletCatBoostRegressor",
                                calculate_linear_regressor_output_shapes, convert_catboost)
    update_registered_converter(XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                convert_xgboost)

    def convert_transformed(scope: Any, operator: Any, container: Any) -> None:  # expm1(regressor(x))
        opv, raw = container.target_opset, operator.raw_operator
        inner = OnnxSubEstimator(raw.regressor, operator.inputs[0], op_version=opv)
        minus_one = np.array([-1.0], dtype=np.float32)
        OnnxAdd(OnnxExp(inner, op_version=opv), minus_one, op_version=opv,
                output_names=operator.outputs[:1]).add_to(scope, container)

    update_registered_converter(TargetTransformed, "GauntletTargetTransformed",
                                calculate_linear_regressor_output_shapes, convert_transformed)

    def convert_scaled_target(scope: Any, operator: Any, container: Any) -> None:  # regressor(x) * scale + mean
        opv, raw = container.target_opset, operator.raw_operator
        inner = OnnxSubEstimator(raw.regressor_, operator.inputs[0], op_version=opv)
        scale = np.asarray(raw.transformer_.scale_, dtype=np.float32)
        mean = np.asarray(raw.transformer_.mean_, dtype=np.float32)
        OnnxAdd(OnnxMul(inner, scale, op_version=opv), mean, op_version=opv,
                output_names=operator.outputs[:1]).add_to(scope, container)

    update_registered_converter(TransformedTargetRegressor, "GauntletScaledTarget",
                                calculate_linear_regressor_output_shapes, convert_scaled_target)
    _REGISTERED.append(InfToNan)
    return InfToNan


def convert_catboost(scope: Any, operator: Any, container: Any) -> None:
    """CatBoost's own ONNX export (one tree-ensemble node) placed in the pipeline's graph. It takes no
    categorical features, which `export` refuses before converting (only numeric inputs are exported)."""
    from catboost.utils import convert_to_onnx_object
    from onnx.helper import get_attribute_value

    onx = convert_to_onnx_object(operator.raw_operator)
    opsets = {d.domain: d.version for d in onx.opset_import}
    node = onx.graph.node[0]
    container.add_node(node.op_type, [operator.inputs[0].full_name], [o.full_name for o in operator.outputs],
                       op_domain=node.domain, op_version=opsets.get(node.domain),
                       name=scope.get_unique_operator_name(node.op_type),
                       **{a.name: get_attribute_value(a) for a in node.attribute})


def _as_plain_sklearn(pipeline: Any, inf_marker: type) -> Any:
    """A copy with gauntlet's scaler swapped for scikit-learn's, which it extends, and the
    infinite-to-missing step for its marker."""
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from tasks.ml import preprocessing as pre

    swaps = ((pre.ColumnwiseScaler, StandardScaler),)
    pipeline = copy.deepcopy(pipeline)

    def walk(obj: Any) -> None:
        for ours, theirs in swaps:
            if type(obj) is ours:
                obj.__class__ = theirs
        if isinstance(obj, FunctionTransformer) and obj.func is pre.inf_to_nan:
            obj.__class__ = inf_marker
        for _, step in getattr(obj, "steps", None) or []:
            walk(step)
        for _, transformer, _ in getattr(obj, "transformers_", None) or []:
            if not isinstance(transformer, str):
                walk(transformer)

    walk(pipeline)
    return pipeline


def export(decision: Any, features: pd.DataFrame) -> tuple[bytes | None, dict[str, Any]]:
    """(the ONNX model's bytes, or None, and what to record). `decision` is the registered object
    (tasks.ml.evaluation.DecisionModel, or tasks.ml.regression.RegressionModel); `features` are rows to
    check parity on (the test split)."""
    from tasks.ml.metrics import predict_labels

    if getattr(decision, "calibrator", None) is not None:
        return None, {"exported": False, "reason": "calibrated models are not exported (no calibrator converter)"}
    numeric = features.select_dtypes(include=["number", "bool"])
    if numeric.shape[1] != features.shape[1]:
        odd = [c for c in features.columns if c not in numeric.columns][:5]
        return None, {"exported": False, "reason": f"only numeric inputs are exported; {odd} are not numbers"}
    try:
        import onnxruntime as rt
        from skl2onnx import to_onnx

        marker = _register_converters()
        model = _as_plain_sklearn(decision.model, marker)
        X = features.astype(np.float32)
        options = {"zipmap": False} if hasattr(decision, "predict_proba") else None  # classifiers: plain arrays
        onx = to_onnx(model, X[:1], options=options, target_opset=TARGET_OPSET)
        data = onx.SerializeToString()
        session = rt.InferenceSession(data, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        outputs = session.run(None, {name: X[[column]].to_numpy() for name, column in zip(names, X.columns,
                                                                                           strict=True)})
        proba = outputs[-1]  # classifiers: (label, probabilities); regressors: (variable,)
    except Exception as exc:  # noqa: BLE001 - a model ONNX cannot express is recorded, never fatal
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, {"exported": False, "reason": f"{type(exc).__name__}: {first[:300]}"}
    if not hasattr(decision, "predict_proba"):  # a regression: one output, the prediction
        return _regression_parity(decision, features, data, names, proba)
    reference = np.asarray(decision.predict_proba(features))
    max_diff = float(np.max(np.abs(np.asarray(proba) - reference))) if len(features) else 0.0
    agree = float(np.mean(predict_labels(proba, decision.threshold) == decision.predict(features)))
    record = {
        "inputs": dict(zip(map(str, features.columns), names, strict=True)),
        "outputs": ["label", "probabilities"], "opset": TARGET_OPSET, "parity_rows": len(features),
        "max_abs_probability_diff": max_diff, "label_agreement": agree, "tolerance": PARITY_TOLERANCE,
        "threshold": decision.threshold,
    }
    if agree < 1.0 or max_diff > PARITY_TOLERANCE:
        return None, {"exported": False, "reason": f"parity check failed: label agreement {agree:.4f}, largest "
                      f"probability difference {max_diff:.2e} (tolerance {PARITY_TOLERANCE})", **record}
    return data, {"exported": True, **record}


# A regression's ONNX predictions may differ from the original's by float32 rounding inside the graph: at
# most this share of the predictions' spread (their standard deviation), on the same float32 inputs. (On the
# float64 inputs, a value within float32 rounding of a tree's split can land in the other leaf: counted.)
REGRESSION_PARITY = 1e-3


def _regression_parity(decision: Any, features: pd.DataFrame, data: bytes, names: list[str], output: Any
                       ) -> tuple[bytes | None, dict[str, Any]]:
    reference = np.asarray(decision.predict(features.astype(np.float32)), dtype=np.float64)
    onnx_pred = np.asarray(output, dtype=np.float64).reshape(-1)
    max_diff = float(np.max(np.abs(onnx_pred - reference))) if len(features) else 0.0
    scale = float(np.std(reference)) or 1.0
    exact = np.asarray(decision.predict(features), dtype=np.float64)
    record = {
        "inputs": dict(zip(map(str, features.columns), names, strict=True)), "outputs": ["variable"],
        "opset": TARGET_OPSET, "parity_rows": len(features), "max_abs_prediction_diff": max_diff,
        "tolerance": f"{REGRESSION_PARITY} x the predictions' standard deviation ({REGRESSION_PARITY * scale:.3g})",
        "rows_off_on_float64_inputs": int(np.sum(np.abs(onnx_pred - exact) > REGRESSION_PARITY * scale)),
        "interval_half_width": getattr(decision, "half_width", None),
    }
    if max_diff > REGRESSION_PARITY * scale:
        return None, {"exported": False, "reason": f"parity check failed: largest prediction difference "
                      f"{max_diff:.3g} over {REGRESSION_PARITY} x their spread {scale:.3g}", **record}
    return data, {"exported": True, **record}
