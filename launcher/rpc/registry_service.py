"""BlockRegistry: serves the in-process registry of rankitect.blocks (the one the searchers
use), rankitect.arch validation and rankitect.cost, through the converters of convert.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from launcher.rpc import convert
from launcher.rpc.errors import Refused, clip, invalid_argument, show
from launcher.rpc.gen import registry_pb2 as rpb
from launcher.rpc.gen import registry_pb2_grpc
from rankitect.arch.graph import Architecture
from rankitect.arch.validate import validate
from rankitect.blocks import block_names, get_block, list_blocks
from rankitect.cost import cost_of
from rankitect.errors import ArchitectureError, DataError
from rankitect.schema import Schema

SERVICE_NAME = rpb.DESCRIPTOR.services_by_name["BlockRegistry"].full_name


class BlockRegistryService(registry_pb2_grpc.BlockRegistryServicer):
    """`allowed_path(path, field)` resolves a server-side dataset path the caller named, raising
    Refused PERMISSION_DENIED outside the server's --allow-root folders."""

    def __init__(self, allowed_path: Callable[[str, str], Path]) -> None:
        self._allowed_path = allowed_path

    def ListBlocks(self, request: rpb.ListBlocksRequest, context: Any) -> rpb.ListBlocksResponse:
        specs = [s for s in list_blocks() if not request.tag or request.tag in s.tags]
        return rpb.ListBlocksResponse(blocks=[convert.block_to_proto(s) for s in specs])

    def GetBlock(self, request: rpb.GetBlockRequest, context: Any) -> rpb.BlockSpec:
        if not request.name:
            raise invalid_argument("name", "required: a block name, e.g. 'fc'")
        if request.name not in block_names():
            raise Refused(grpc.StatusCode.NOT_FOUND, f"name: unknown block {show(request.name)}; "
                                                     f"registered blocks: {block_names()}")
        return convert.block_to_proto(get_block(request.name).spec)

    def ValidateArchitecture(self, request: rpb.ValidateArchitectureRequest,
                             context: Any) -> rpb.ValidateArchitectureResponse:
        schema = self._schema(request)
        try:
            validated = validate(self._architecture(request), schema)
        except ArchitectureError as exc:
            return rpb.ValidateArchitectureResponse(valid=False, errors=convert.problems_to_proto(exc.problems))
        return rpb.ValidateArchitectureResponse(
            valid=True, nodes=[convert.node_info_to_proto(n) for n in validated.nodes])

    def EstimateCost(self, request: rpb.EstimateCostRequest, context: Any) -> rpb.EstimateCostResponse:
        schema = self._schema(request)
        try:
            cost = cost_of(self._architecture(request), schema)
        except ArchitectureError as exc:
            raise invalid_argument("architecture", "does not validate: "
                                   + convert.problems_text(exc.problems)) from None
        return convert.cost_to_proto(cost)

    # -- request parts ----------------------------------------------------------------------
    @staticmethod
    def _architecture(request: Any) -> Architecture:
        """The request's architecture; ArchitectureError for a structural mistake."""
        if not request.HasField("architecture"):
            raise invalid_argument("architecture", "required")
        return convert.architecture_from_proto(request.architecture, "architecture")

    def _schema(self, request: Any) -> Schema:
        source = request.WhichOneof("schema_source")
        if source == "schema":
            return convert.schema_from_proto(request.schema, "schema")
        if source == "dataset":
            if not request.dataset:
                raise invalid_argument("dataset", "must be a dataset folder on the server")
            path = self._allowed_path(request.dataset, "dataset")
            try:
                return Schema.load(path)
            except DataError as exc:
                raise invalid_argument("dataset", clip(str(exc), 500)) from None
            except (OSError, ValueError, TypeError, AttributeError) as exc:  # not a schema.json we wrote
                raise invalid_argument("dataset", f"cannot read its schema.json: {clip(str(exc), 300)}") from None
        raise invalid_argument("schema_source", "required: give `schema` (the columns) or `dataset` "
                                                "(a dataset folder on the server)")
