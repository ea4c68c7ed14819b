"""tools/bench_release.py at the tiny preset: the release-size run's structure, its figures real and resumable."""
import json

from tools.bench_release import main


def test_the_release_bench_exports_and_describes_each_variant_and_resumes(tmp_path, capsys):
    argv = ["--workdir", str(tmp_path), "--preset", "tiny", "--variants", "fp32", "int8", "--regions", "2",
            "--tokens", "2", "--steps", "1"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["summary"]) == {"fp32", "int8"}
    for variant, row in result["summary"].items():
        assert row["export_s"] > 0 and row["export_peak_rss_gb"] > 0 and row["bundle_gb"] > 0
        assert 0 < row["describe_peak_rss_gb"] and row["decode_ms_batch_1"] > 0 and row["decode_ms_batch_2"] > 0
        describe = result["variants"][variant]["describe"]
        assert describe["precision"] == variant
        assert describe["batch_2"]["bytes_read_per_step"] > describe["batch_1"]["bytes_read_per_step"]
        assert 0 <= describe["greedy_token_agreement_with_fp32"] <= 1
    assert result["variants"]["fp32"]["describe"]["greedy_token_agreement_with_fp32"] == 1.0
    int8 = result["variants"]["int8"]["describe"]["batch_1"]["bytes_read_per_step"]
    assert int8 < result["variants"]["fp32"]["describe"]["batch_1"]["bytes_read_per_step"]
    assert main([a for a in argv if a != "int8"]) == 0  # a second run keeps the bundle and its export figures
    again = json.loads(capsys.readouterr().out)
    assert again["variants"]["fp32"]["export"]["reused"] is True
    assert again["summary"]["fp32"]["export_s"] == result["summary"]["fp32"]["export_s"]


def test_a_bad_argument_is_one_line(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown preset 'huge'" in err[0]
    assert not list(tmp_path.iterdir())
