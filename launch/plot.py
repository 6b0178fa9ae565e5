"""Draw a sweep's or a run's figures (matplotlib; no JAX).

    python launch/plot.py runs/pm_depth            # a sweep: sweep.csv -> figures/*.png
    python launch/plot.py runs/pm_depth/runs/depth-4__width-64/seed_0   # a run: metrics.csv (+ norms)
    python launch/plot.py RUN_A RUN_B --labels=a,b --out=figs  # runs on one figure
    python launch/plot.py RUN_A RUN_B --windows=1000000        # markdown table, no figure

A sweep directory's figures are redrawn from its sweep.csv alone; a run directory's from its
metrics.csv (and residual_norms.csv when present); several run directories share one figure
of their evaluation metrics against env steps (figs/compare_env_steps.png). With --windows=N,
one or more run directories are printed as a markdown table of their evaluations averaged over
windows of N env steps, with the first evaluation reaching 0.1 and 0.5 success and the mean of
the last --last evaluations (plots.window_table). Runs sharing a label are seeds of one
setting: one curve (their mean, with a 95% band), and with --windows a table of the setting's
mean over its runs (smallest and largest run in brackets). See deepcrl_core/plots.py.
"""

import sys

from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "Folder for the PNGs (default: DIR/figures; the "
                           "current directory when comparing runs).")
_LAST = flags.DEFINE_integer("last", 5, "Evaluations per run averaged into 'final' values "
                             "(a sweep directory, or --windows).")
_WINDOWS = flags.DEFINE_integer("windows", None, "Print the run directories' evaluations "
                                "averaged over windows of this many env steps (markdown) "
                                "instead of drawing.")
_LABELS = flags.DEFINE_list("labels", None, "With several run directories: one legend label "
                            "each (default: the directories); runs sharing a label are "
                            "averaged as seeds of one setting.")


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("usage: python launch/plot.py DIR  (a sweep or a run directory), or "
                         "RUN_DIR RUN_DIR ... [--labels=a,b,...]")
  from deepcrl_core import plots  # pylint: disable=g-import-not-at-top
  path = argv[1]
  try:
    if _WINDOWS.value is not None:
      if _OUT.value:
        raise ValueError("--out applies to figures, not to --windows")
      print(plots.window_table(argv[1:], _WINDOWS.value, _LABELS.value, _LAST.value), end="")
      return 0
    if len(argv) > 2:
      if _LAST.value != plots.FINAL_EVALUATIONS:
        raise ValueError("--last applies to a sweep directory")
      written = plots.plot_runs(argv[1:], _LABELS.value, _OUT.value)
    elif _LABELS.value:
      raise ValueError("--labels applies to several run directories")
    elif _LAST.value != plots.FINAL_EVALUATIONS:
      import os  # pylint: disable=g-import-not-at-top
      if not os.path.exists(os.path.join(path, "sweep.csv")):
        raise ValueError("--last applies to a sweep directory")
      written = plots.plot_sweep(path, _OUT.value, last=_LAST.value)
    else:
      written = plots.plot_path(path, _OUT.value)
  except (OSError, ValueError) as e:
    print(f"plot: {e}", file=sys.stderr)
    return 2
  for p in written:
    print(p)
  return 0


if __name__ == "__main__":
  app.run(main)
