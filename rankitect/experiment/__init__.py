"""One search run, the application around the strategies (NNI's "experiment"):

- `config`: the search config, parsed and checked once (`SearchConfig.from_dict`);
- `plan`: what is checked before anything starts (data, dates, space, searcher options,
  baselines validated once) and the run folder;
- `study`: the Optuna study the trials live in;
- `driver`: the ask / run / tell loop (`Driver`, with `AskGate`, `TellOrder`, `BaselineRuns`,
  `ProgressView`);
- `executor`: Ray: the session and the pool of trial workers;
- `trial`: one trial on a worker (`TrialSpec` -> `TrialOutcome`), a `rankitect train` run;
- `planning`: the pool's side of a searcher's planning phase;
- `results`, `report`, `retention`, `final`, `events`, `pruning`: what a run leaves and shows.

Imports point down only: this package uses `rankitect.searchers` (the strategies) and the
core; `distdnas` and `launcher` use it. `run.search` is the entry point (`rankitect.search`).
"""
