#!/usr/bin/env bash
# The levers of the 128K study on one CUDA GPU, with their own dense and equal-time partners trained by the
# same code (one seed), resumable across calls:
#
#   scripts/study_levers_h200.sh RUNS RESULTS SECONDS [JOBS]
#   scripts/study_levers_h200.sh runs/levers bench/results/recipe-study/long-levers 540 2
#
# First the calibrations, one at a time with the GPU to themselves: the plan's dense and Lighthouse step
# times, then each lever's own stage-1 step time (the switch levers keep the plan's). Then the arms, JOBS at a
# time (default 2: at 128K one arm fills the H200, so more at once only leave more half-trained arms at the
# deadline): the partners (dense, equal-time) and the levers. Sharing the GPU stretches an arm's wall time,
# never its steps, which the calibrations fixed. No arm starts or continues after SECONDS from the script's
# start; called again, it resumes: calibrations in RUNS are kept, arms finished in RUNS or RESULTS are not
# trained again, a stopped arm continues from its checkpoint in RUNS. Every lighthouse-train command gets
# --eval-every 0: evaluations at the switch and the end.
# Ends with `study summarize RESULTS`. Needs data/prose.jsonl.xz and the lighthouse package with CUDA kernels.
set -euo pipefail

runs=${1:?usage: scripts/study_levers_h200.sh RUNS RESULTS SECONDS [JOBS]}
results=${2:?usage: scripts/study_levers_h200.sh RUNS RESULTS SECONDS [JOBS]}
seconds=${3:?usage: scripts/study_levers_h200.sh RUNS RESULTS SECONDS [JOBS]}
jobs=${4:-2}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
study=("$python" -m lighthouse.train.study)
common=(--eval-every 0)
places=(--runs "$runs" --results "$results")

# name | study lever options | lighthouse-train options. k sets S/N to 20.3%, 29.7% and 45.3% at 128K.
levers=(
  "k20||--topk 2304"
  "k30||--topk 3840"
  "k45||--topk 6400"
  "boundary2||--dense-boundary 2"
  "switch60|--switch 0.6|"
  "switch90|--switch 0.9|"
  "rope-before||--rope before"
  "dilated||--scorer dilated"
)

left() { echo $((seconds - SECONDS)); }

# Calibrations (a deadline of 0 writes the plan or the lever's spec and trains nothing).
"${study[@]}" run "${places[@]}" --seeds 0 --arms dense equal-time --deadline-s 0 -- "${common[@]}" >/dev/null
plan_lighthouse_s=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["step_s"]["lighthouse"])' \
  "$runs/plan.json")
lever_command() {  # lever_command SPEC DEADLINE: the study command of one lever
  local name study_options train_options
  IFS='|' read -r name study_options train_options <<<"$1"
  # shellcheck disable=SC2206
  local extra=($study_options)
  [[ $study_options == *--switch* ]] && extra+=(--lighthouse-step-s "$plan_lighthouse_s")
  # shellcheck disable=SC2086
  echo "${study[*]} lever $name ${places[*]} --seeds 0 --deadline-s $2 ${extra[*]} -- ${common[*]} $train_options"
}
for spec in "${levers[@]}"; do
  $(lever_command "$spec" 0) >/dev/null
done

# The arms, several at a time.
mkdir -p "$runs/logs"
arms=("${study[*]} run ${places[*]} --seeds 0 --arms dense --deadline-s @ -- ${common[*]}"
  "${study[*]} run ${places[*]} --seeds 0 --arms equal-time --deadline-s @ -- ${common[*]}")
names=(dense equal-time)
for spec in "${levers[@]}"; do
  arms+=("$(lever_command "$spec" @)")
  names+=("lever-${spec%%|*}")
done
for i in "${!arms[@]}"; do
  while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done
  ${arms[$i]//@/$(left)} >>"$runs/logs/${names[$i]}.log" 2>&1 &
  sleep 2  # their start-ups (imports, corpus) do not all land at once
done
wait || true
for name in "${names[@]}"; do
  echo "$name: $(grep -h "^seed 0:" "$runs/logs/$name.log" | tail -n 1)"
done
"${study[@]}" summarize "$results"
