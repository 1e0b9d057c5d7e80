# ruff: noqa
# Generated from proto/rankitect/v1/registry.proto by launcher/rpc/codegen.py; do not edit.
from launcher.rpc.gen import architecture_pb2 as _architecture_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAM_KIND_UNSPECIFIED: _ClassVar[ParamKind]
    PARAM_KIND_INT: _ClassVar[ParamKind]
    PARAM_KIND_FLOAT: _ClassVar[ParamKind]
    PARAM_KIND_BOOL: _ClassVar[ParamKind]
    PARAM_KIND_CHOICE: _ClassVar[ParamKind]
    PARAM_KIND_INT_LIST: _ClassVar[ParamKind]
    PARAM_KIND_TABLE_ROWS: _ClassVar[ParamKind]
PARAM_KIND_UNSPECIFIED: ParamKind
PARAM_KIND_INT: ParamKind
PARAM_KIND_FLOAT: ParamKind
PARAM_KIND_BOOL: ParamKind
PARAM_KIND_CHOICE: ParamKind
PARAM_KIND_INT_LIST: ParamKind
PARAM_KIND_TABLE_ROWS: ParamKind

class HyperParam(_message.Message):
    __slots__ = ("name", "kind", "default_value", "doc", "low", "high", "choices", "min_len", "max_len")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    MIN_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ParamKind
    default_value: _architecture_pb2.ParamValue
    doc: str
    low: float
    high: float
    choices: _containers.RepeatedCompositeFieldContainer[_architecture_pb2.ParamValue]
    min_len: int
    max_len: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ParamKind, str]] = ..., default_value: _Optional[_Union[_architecture_pb2.ParamValue, _Mapping]] = ..., doc: _Optional[str] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., choices: _Optional[_Iterable[_Union[_architecture_pb2.ParamValue, _Mapping]]] = ..., min_len: _Optional[int] = ..., max_len: _Optional[int] = ...) -> None: ...

class BlockSpec(_message.Message):
    __slots__ = ("name", "doc", "params", "min_inputs", "max_inputs", "input_ranks", "tags")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MIN_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_RANKS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    doc: str
    params: _containers.RepeatedCompositeFieldContainer[HyperParam]
    min_inputs: int
    max_inputs: int
    input_ranks: _containers.RepeatedScalarFieldContainer[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., doc: _Optional[str] = ..., params: _Optional[_Iterable[_Union[HyperParam, _Mapping]]] = ..., min_inputs: _Optional[int] = ..., max_inputs: _Optional[int] = ..., input_ranks: _Optional[_Iterable[int]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ListBlocksRequest(_message.Message):
    __slots__ = ("tag",)
    TAG_FIELD_NUMBER: _ClassVar[int]
    tag: str
    def __init__(self, tag: _Optional[str] = ...) -> None: ...

class ListBlocksResponse(_message.Message):
    __slots__ = ("blocks",)
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[BlockSpec]
    def __init__(self, blocks: _Optional[_Iterable[_Union[BlockSpec, _Mapping]]] = ...) -> None: ...

class GetBlockRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ValidateArchitectureRequest(_message.Message):
    __slots__ = ("architecture", "schema", "dataset")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    architecture: _architecture_pb2.Architecture
    schema: _architecture_pb2.Schema
    dataset: str
    def __init__(self, architecture: _Optional[_Union[_architecture_pb2.Architecture, _Mapping]] = ..., schema: _Optional[_Union[_architecture_pb2.Schema, _Mapping]] = ..., dataset: _Optional[str] = ...) -> None: ...

class ArchitectureError(_message.Message):
    __slots__ = ("node", "field", "message")
    NODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    field: str
    message: str
    def __init__(self, node: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("id", "block", "params", "output_shape", "flops", "num_params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _architecture_pb2.ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_architecture_pb2.ParamValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    block: str
    params: _containers.MessageMap[str, _architecture_pb2.ParamValue]
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    flops: int
    num_params: int
    def __init__(self, id: _Optional[str] = ..., block: _Optional[str] = ..., params: _Optional[_Mapping[str, _architecture_pb2.ParamValue]] = ..., output_shape: _Optional[_Iterable[int]] = ..., flops: _Optional[int] = ..., num_params: _Optional[int] = ...) -> None: ...

class ValidateArchitectureResponse(_message.Message):
    __slots__ = ("valid", "errors", "nodes")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    errors: _containers.RepeatedCompositeFieldContainer[ArchitectureError]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, valid: _Optional[bool] = ..., errors: _Optional[_Iterable[_Union[ArchitectureError, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class EstimateCostRequest(_message.Message):
    __slots__ = ("architecture", "schema", "dataset")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    architecture: _architecture_pb2.Architecture
    schema: _architecture_pb2.Schema
    dataset: str
    def __init__(self, architecture: _Optional[_Union[_architecture_pb2.Architecture, _Mapping]] = ..., schema: _Optional[_Union[_architecture_pb2.Schema, _Mapping]] = ..., dataset: _Optional[str] = ...) -> None: ...

class EstimateCostResponse(_message.Message):
    __slots__ = ("flops", "params", "embedding_params", "dense_params", "flops_by_node")
    class FlopsByNodeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_PARAMS_FIELD_NUMBER: _ClassVar[int]
    DENSE_PARAMS_FIELD_NUMBER: _ClassVar[int]
    FLOPS_BY_NODE_FIELD_NUMBER: _ClassVar[int]
    flops: int
    params: int
    embedding_params: int
    dense_params: int
    flops_by_node: _containers.ScalarMap[str, int]
    def __init__(self, flops: _Optional[int] = ..., params: _Optional[int] = ..., embedding_params: _Optional[int] = ..., dense_params: _Optional[int] = ..., flops_by_node: _Optional[_Mapping[str, int]] = ...) -> None: ...
