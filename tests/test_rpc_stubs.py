"""The committed stubs in launcher/rpc/gen are what proto/ generates (run `make proto`)."""

from __future__ import annotations

from launcher.rpc import codegen


def test_stubs_are_up_to_date(tmp_path) -> None:
    written = codegen.generate(tmp_path)
    fresh = codegen.generated_names(tmp_path)
    assert fresh == sorted(p.name for p in written) and len(fresh) == 3 * len(codegen.proto_files())
    committed = codegen.generated_names(codegen.GEN_DIR)
    assert committed == fresh, "stubs missing or left over in launcher/rpc/gen: run `make proto`"
    stale = [n for n in fresh if (tmp_path / n).read_bytes() != (codegen.GEN_DIR / n).read_bytes()]
    assert not stale, f"out of date (run `make proto`): {stale}"


def test_proto_package_and_files() -> None:
    from launcher.rpc.gen import architecture_pb2, registry_pb2, search_pb2

    for module in (architecture_pb2, registry_pb2, search_pb2):
        assert module.DESCRIPTOR.package == "rankitect.v1"
    assert set(registry_pb2.DESCRIPTOR.services_by_name) == {"BlockRegistry"}
    methods = {m.name for m in search_pb2.DESCRIPTOR.services_by_name["SearchService"].methods}
    assert methods == {"SubmitSearch", "GetJob", "ListJobs", "CancelJob", "ResumeJob", "WatchJob", "GetResult",
                       "DownloadArtifact"}
