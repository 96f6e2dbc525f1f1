"""``python -m stiffkit.generate``: seeds, fixed batches, the file, and torchrun sharding."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stiffkit.diffusion.samplers import sample_final
from stiffkit.generate import GenerateConfig, batches_of, main, parse_seeds
from stiffkit.paper.toy import toy_world

ROOT = Path(__file__).resolve().parent.parent


def test_seed_lists_and_their_errors():
    assert parse_seeds("0-3") == (0, 1, 2, 3)
    assert parse_seeds("5, 7-8,10") == (5, 7, 8, 10)
    for bad, match in [("", "must look like"), ("3-1", "backwards"), ("1,1", "repeats"),
                       ("a-b", "must look like"), ("-2", "must look like")]:
        with pytest.raises(ValueError, match=match):
            parse_seeds(bad)


def test_seeds_must_split_into_fixed_batches():
    config = GenerateConfig("toy", parse_seeds("0-7"), 4, 8)
    assert batches_of(config) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    with pytest.raises(ValueError, match="does not split into batches of `--batch` = 3"):
        GenerateConfig("toy", parse_seeds("0-7"), 3, 8)
    with pytest.raises(ValueError, match="`--steps`"):
        GenerateConfig("toy", parse_seeds("0-7"), 4, 0)
    with pytest.raises(ValueError, match="`--guidance`"):
        GenerateConfig("toy", parse_seeds("0-7"), 4, 8, guidance="strong")


def test_bad_command_lines_exit_with_the_option_named(capsys):
    for argv, match in [(["--seeds", "0-9", "--batch", "4", "--out", "x.npz"], "--batch"),
                        (["--seeds", "0-7", "--batch", "4", "--out", "x.txt"], "--out"),
                        (["--seeds", "0-7", "--batch", "4", "--threads", "0", "--out", "x.npz"],
                         "--threads")]:
        with pytest.raises(SystemExit):
            main(argv)
        assert match in capsys.readouterr().err


def test_one_process_writes_the_samples_of_stiffkit_sample(tmp_path):
    out = tmp_path / "s.npz"
    main(["--seeds", "0-15", "--batch", "8", "--steps", "6", "--w-stiff", "0.5",
          "--guidance", "cfg", "--out", str(out), "--no-progress", "--threads", "1"])
    data = np.load(out)
    assert data["samples"].shape == (16, 2) and data["samples"].dtype == np.float32
    np.testing.assert_array_equal(data["seeds"], np.arange(16))
    config = json.loads(str(data["config"]))
    assert config["guidance"] == "cfg" and config["w_stiff"] == 0.5
    world = toy_world()
    for lo in (0, 8):
        x = world.initial_state(list(range(lo, lo + 8)))
        want, _ = sample_final(world.denoiser("cfg"), x, world.sigmas(6), w_stiff=0.5)
        np.testing.assert_array_equal(data["samples"][lo:lo + 8], want.numpy())


def test_torchrun_with_two_processes_writes_the_same_file_bit_for_bit(tmp_path):
    # Two ranks on loopback (gloo) against one process: the same bytes.
    args = ["-m", "stiffkit.generate", "--model", "toy", "--seeds", "0-63", "--batch", "16",
            "--steps", "4", "--w-stiff", "0.5", "--no-progress"]
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    subprocess.run([sys.executable, *args, "--out", str(one)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", *args, "--out", str(two)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stdout
    assert one.read_bytes() == two.read_bytes()
    assert torch.isfinite(torch.from_numpy(np.load(two)["samples"])).all()


def test_digits_model_samples_class_consistent_images(tmp_path):
    # --model digits: the learned 8x8 model, class seed mod 10, CFG with its unconditional side.
    from stiffkit.diffusion.metrics import predict_digits

    out = tmp_path / "d.npz"
    main(["--model", "digits", "--seeds", "0-19", "--batch", "10", "--steps", "8",
          "--guidance", "cfg", "--w-stiff", "0.4", "--out", str(out), "--no-progress"])
    data = np.load(out)
    assert data["samples"].shape == (20, 1, 8, 8) and np.isfinite(data["samples"]).all()
    predicted = np.asarray(predict_digits(torch.from_numpy(data["samples"])))
    assert (predicted == data["seeds"] % 10).mean() >= 0.8
    with pytest.raises(SystemExit):
        main(["--model", "digits", "--seeds", "0-9", "--batch", "10", "--label", "12",
              "--out", str(out)])
