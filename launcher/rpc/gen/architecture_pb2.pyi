# ruff: noqa
# Generated from proto/rankitect/v1/architecture.proto by launcher/rpc/codegen.py; do not edit.
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParamValue(_message.Message):
    __slots__ = ("int_value", "float_value", "bool_value", "string_value", "int_list", "json_value")
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_LIST_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUE_FIELD_NUMBER: _ClassVar[int]
    int_value: int
    float_value: float
    bool_value: bool
    string_value: str
    int_list: IntList
    json_value: _struct_pb2.Value
    def __init__(self, int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., string_value: _Optional[str] = ..., int_list: _Optional[_Union[IntList, _Mapping]] = ..., json_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class IntList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "block", "inputs", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    block: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    params: _containers.MessageMap[str, ParamValue]
    def __init__(self, id: _Optional[str] = ..., block: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., params: _Optional[_Mapping[str, ParamValue]] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("name", "embedding", "nodes", "output")
    class EmbeddingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    embedding: _containers.MessageMap[str, ParamValue]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    output: str
    def __init__(self, name: _Optional[str] = ..., embedding: _Optional[_Mapping[str, ParamValue]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., output: _Optional[str] = ...) -> None: ...

class DenseColumn(_message.Message):
    __slots__ = ("name", "mean", "std", "transform", "fill", "scale", "clip_min", "clip_max", "buckets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    CLIP_MIN_FIELD_NUMBER: _ClassVar[int]
    CLIP_MAX_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    mean: float
    std: float
    transform: str
    fill: float
    scale: str
    clip_min: float
    clip_max: float
    buckets: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., transform: _Optional[str] = ..., fill: _Optional[float] = ..., scale: _Optional[str] = ..., clip_min: _Optional[float] = ..., clip_max: _Optional[float] = ..., buckets: _Optional[_Iterable[float]] = ...) -> None: ...

class SparseColumn(_message.Message):
    __slots__ = ("name", "hash_size", "multi", "hashing", "avg_len", "distinct")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HASH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MULTI_FIELD_NUMBER: _ClassVar[int]
    HASHING_FIELD_NUMBER: _ClassVar[int]
    AVG_LEN_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    name: str
    hash_size: int
    multi: bool
    hashing: str
    avg_len: float
    distinct: int
    def __init__(self, name: _Optional[str] = ..., hash_size: _Optional[int] = ..., multi: _Optional[bool] = ..., hashing: _Optional[str] = ..., avg_len: _Optional[float] = ..., distinct: _Optional[int] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("label", "dense", "sparse", "embedding_dim", "date_column")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    DATE_COLUMN_FIELD_NUMBER: _ClassVar[int]
    label: str
    dense: _containers.RepeatedCompositeFieldContainer[DenseColumn]
    sparse: _containers.RepeatedCompositeFieldContainer[SparseColumn]
    embedding_dim: int
    date_column: str
    def __init__(self, label: _Optional[str] = ..., dense: _Optional[_Iterable[_Union[DenseColumn, _Mapping]]] = ..., sparse: _Optional[_Iterable[_Union[SparseColumn, _Mapping]]] = ..., embedding_dim: _Optional[int] = ..., date_column: _Optional[str] = ...) -> None: ...
