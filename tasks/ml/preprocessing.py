"""Feature preprocessing: imputation, scaling where the model needs it, one-hot for categoricals."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

MISSING = "__missing__"


def as_category_strings(frame: pd.DataFrame) -> np.ndarray:
    """Any categorical-ish columns -> an object array of strings, missing -> "__missing__"."""
    values = frame.astype(object).where(frame.notna(), MISSING)
    return np.asarray(values, dtype=object).astype(str).astype(object)


def build_preprocessor(
    numeric: list[str], categorical: list[str], *, scale: bool, max_categories: int = 50
) -> ColumnTransformer:
    """A ColumnTransformer over named columns, so column order in new data does not matter."""
    numeric_steps: list[tuple[str, object]] = [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
    ]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        categorical_steps = Pipeline(
            [
                ("as_strings", FunctionTransformer(as_category_strings, feature_names_out="one-to-one")),
                (
                    "one_hot",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        max_categories=max_categories,
                        sparse_output=False,
                        dtype=np.float32,
                    ),
                ),
            ]
        )
        transformers.append(("categorical", categorical_steps, categorical))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
