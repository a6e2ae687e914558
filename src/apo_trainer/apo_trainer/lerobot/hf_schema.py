"""Arrow schemas of the frame parquet files, with the Hugging Face ``features`` metadata readers need.

``datasets`` keeps a table's feature types in the parquet schema metadata under ``b"huggingface"``
(``{"info": {"features": ...}}``); without it an image column comes back as a raw {bytes, path}
struct. Each LeRobot version reads with its own ``datasets`` major version, so each layout gets
the metadata that version writes:

- v3.0 (lerobot 0.4, ``datasets`` 4): produced by the installed ``datasets.Features`` itself;
- v2.1 (lerobot 0.3, ``datasets`` <= 3.6): the 3.x serialisation (``Sequence`` with ``length``,
  ``Value``/``Image`` with their ``id``/``mode``/``decode`` fields), which ``datasets`` 4 still reads.
"""

from __future__ import annotations

import json

import pyarrow as pa

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


def _arrow_type(ft: dict) -> pa.DataType:
    if ft["dtype"] == "image":
        return IMAGE_STRUCT
    if list(ft["shape"]) == [1]:
        return _ARROW[ft["dtype"]]
    if len(ft["shape"]) == 1:
        return pa.list_(_ARROW[ft["dtype"]], int(ft["shape"][0]))  # datasets' fixed-length Sequence
    raise ValueError(f"no parquet type for feature {ft}")


def _v21_feature(ft: dict) -> dict:
    if ft["dtype"] == "image":
        return {"mode": None, "decode": True, "id": None, "_type": "Image"}
    value = {"dtype": ft["dtype"], "id": None, "_type": "Value"}
    if list(ft["shape"]) == [1]:
        return value
    return {"feature": value, "length": int(ft["shape"][0]), "id": None, "_type": "Sequence"}


def hf_features(features: dict[str, dict]):
    """``datasets.Features`` for LeRobot feature specs (the mapping LeRobot's readers apply)."""
    import datasets

    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "image":
            out[key] = datasets.Image()
        elif list(ft["shape"]) == [1]:
            out[key] = datasets.Value(ft["dtype"])
        else:
            out[key] = datasets.Sequence(datasets.Value(ft["dtype"]), length=int(ft["shape"][0]))
    return datasets.Features(out)


def frame_schema(features: dict[str, dict], version: str) -> pa.Schema:
    if version == "v3.0":
        schema = hf_features(features).arrow_schema
    else:
        metadata = {"info": {"features": {key: _v21_feature(ft) for key, ft in features.items()}}}
        schema = pa.schema([(key, _arrow_type(ft)) for key, ft in features.items()],
                           metadata={"huggingface": json.dumps(metadata)})
    expected = [(key, _arrow_type(ft)) for key, ft in features.items()]
    if [(f.name, f.type) for f in schema] != expected:
        raise RuntimeError(f"datasets maps the features to {schema}, not to {expected}")
    return schema


def frame_table(columns: dict[str, object], schema: pa.Schema) -> pa.Table:
    """One episode's columns as a table of ``schema`` (images as {bytes, path=None})."""
    arrays = []
    for field in schema:
        values = columns[field.name]
        if field.type == IMAGE_STRUCT:
            arrays.append(pa.array([{"bytes": b, "path": None} for b in values], type=IMAGE_STRUCT))
        elif pa.types.is_fixed_size_list(field.type):
            flat = pa.array(values.reshape(-1), type=field.type.value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
