"""profiling/profiling_common.py: timing, tables and CSV shared by the profiling scripts."""

import csv

import pytest

import profiling_common as pc


def test_time_calls_counts_warmup_and_repeats_and_blocks_each_call():
  calls, blocked = [], []
  timing = pc.time_calls(lambda: calls.append(1) or len(calls), repeats=3, warmup=2,
                         block=blocked.append)
  assert len(calls) == 5 and blocked == [1, 2, 3, 4, 5]
  assert len(timing.samples) == 3
  assert timing.best_s == min(timing.samples) <= timing.median_s <= max(timing.samples)
  assert timing.best_cpu_s >= 0
  with pytest.raises(ValueError, match="repeats"):
    pc.time_calls(lambda: None, repeats=0)


def test_median_of_an_even_number_of_samples(monkeypatch):
  ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 4.5, 4.5, 7.5])  # call times 1, 3, 0.5, 3
  monkeypatch.setattr(pc.time, "perf_counter", lambda: next(ticks))
  timing = pc.time_calls(lambda: None, repeats=4, warmup=0, block=lambda x: x)
  assert timing.samples == [1.0, 3.0, 0.5, 3.0]
  assert timing.best_s == 0.5 and timing.median_s == 2.0


def test_markdown_table_and_its_row_check():
  table = pc.markdown_table(["a", "b"], [(1, "x"), (2.5, "")])
  assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 |  |"]
  with pytest.raises(ValueError, match="row has 1 cells, the header 2"):
    pc.markdown_table(["a", "b"], [(1,)])


def test_write_csv_keeps_the_columns_and_ignores_extra_keys(tmp_path):
  path = tmp_path / "sub" / "rows.csv"
  pc.write_csv(str(path), [{"a": 1, "b": 2, "extra": 3}, {"a": 4}], ["a", "b"])
  with open(path) as f:
    rows = list(csv.DictReader(f))
  assert rows == [{"a": "1", "b": "2"}, {"a": "4", "b": ""}]


def test_list_flag_problems_name_the_flag_and_accept_good_values():
  assert pc.names_problem("ops", "block,infonce", ("block", "infonce")) is None
  for bad in ("blok", "block,", "", "block,xla"):
    msg = pc.names_problem("ops", bad, ("block", "infonce"))
    assert (msg is None) == (bad == "block,"), bad
  assert "--ops=blok" in pc.names_problem("ops", "blok", ("block",))
  assert pc.ints_problem("depths", "4,16") is None
  assert pc.ints_problem("widths", "", allow_empty=True) is None
  for bad in ("", "4,x", "0", "4,-8"):
    assert pc.ints_problem("depths", bad).startswith(f"--depths={bad}:"), bad
