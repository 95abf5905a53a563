"""The GPU fleet benchmark runs end to end (on CPU, a few records), so a device session
is not spent finding a broken script."""

from benchmarks import bench_gpu_fleet


def test_gpu_fleet_benchmark_smoke_run_on_cpu(capsys):
    bench_gpu_fleet.main(["--device", "cpu", "--shadows", "4", "--records", "96", "--packs", "2",
                          "--probe-epochs", "1", "--epochs", "2", "--batch", "32"])
    out = capsys.readouterr().out.splitlines()
    probes = [line for line in out if line.startswith("probe: 2 per pack")]
    assert len(probes) == 3 and all("img/s" in line for line in probes)
    fleet = [line for line in out if line.startswith("fleet: 4 shadows x 96 records x 2 epochs")]
    assert len(fleet) == 1 and "s for 2 epochs" in fleet[0]
