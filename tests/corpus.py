"""An adversarial corpus of batch predictions, and an oracle that knows each row's prediction.

Each case writes input shards and result shards whose every line is known: input line L of a
shard holds the row with id ``r<shard>-<k>``, and the score meant for that row is a value no
other row of the corpus has. The oracle checks predjoin's output by value, using only the
standard library and the case's own description (never predjoin's code): every record pairs a
row's id with the score meant for it, on the lines it claims; every observation ends up exactly
once, as a record or a dead letter; and each shard ends as the case expects (joined, or refused
with the expected reason). A shard whose result lines do not answer its rows one for one must be
refused: a record holding another row's prediction fails the check, whatever the counts say.

Observations are what the rules of the README call rows: the lines of an input after its
header line (when the run decided inputs have one), less the empty lines at the end of the file.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import os

JOINED = 'joined'     # the shard is joined (some rows may still be dead-lettered, see below)
REFUSED = 'refused'   # the shard is refused, for a reason the case does not pin down
LAUNCH = 'launch'     # the run stops at launch (exit 2) and writes nothing

COLUMNS = ('id', 'v', 'note')


def score_of(shard: int, k: int) -> str:
  """The score meant for row k (1-based) of shard ``shard``: distinct across the corpus."""
  return f'{(shard * 1000 + k) / 100000:.6f}'


@dataclasses.dataclass
class Shard:
  """One shard of a case: how its input is written, and how the service answered it.

  ``result``: ``exact`` (one line per observation), ``short_end``/``short_start`` (the last or
  the first line missing), ``long`` (one extra line at the end), ``skip_empty`` (the service
  skipped empty observations), ``answer_trailing`` (it answered the empty lines at the end with
  blank lines), ``logical`` (a value's quoted line break counted as inside one observation),
  ``swap`` (two lines swapped; with a tag column the shard must be found misaligned).
  """

  rows: int = 6
  header: bool = True
  columns: tuple[str, ...] = COLUMNS
  crlf: bool = False
  bom: bool = False
  empty_at: tuple[int, ...] = ()  # empty observations before these data rows (0-based)
  empty_first: bool = False       # an empty line above the header line
  trailing_empty: int = 0
  quoted_newline: int | None = None  # a data row whose note holds a line break
  blanks: tuple[int, ...] = ()       # data rows the service failed (blank result line)
  result: str = 'exact'
  expect: str = JOINED               # JOINED, REFUSED or a dead-letter reason


@dataclasses.dataclass
class Case:
  name: str
  shards: list[Shard]
  has_header: bool | None = None     # the truth; None: given per shard
  schema: bool = False               # a .schema beside the inputs (dataFileContainsHeader)
  option: str | None = None          # --input_header
  tag: bool = False                  # the result has a tag column (the schema's rowId)
  expect_launch: bool = False        # the run must stop at launch


@dataclasses.dataclass
class Observation:
  line: int              # the input line it is on (1-based)
  row_id: str | None     # None for an empty line or the second half of a broken row
  result: str | None     # the result line meant for it ('' = failed); None: not answered
  kind: str = 'data'     # data, empty, or half (the second line of a value's line break)


@dataclasses.dataclass
class Written:
  """A shard as written: its files and the oracle's view of it."""

  input_path: str
  result_path: str
  observations: list[Observation]
  expect: str


def _data_line(shard_no: int, k: int, shard: Shard) -> list[str]:
  note = f'n{k}, "q"'
  if shard.quoted_newline is not None and k - 1 == shard.quoted_newline:
    note = 'first half\nsecond half'
  values = {'id': f'r{shard_no}-{k}', 'v': str(10 * k + shard_no), 'note': note}
  return [values[name] for name in shard.columns]


def _csv(cells: list[str]) -> str:
  out = []
  for cell in cells:
    if any(c in cell for c in ',"\n'):
      cell = '"' + cell.replace('"', '""') + '"'
    out.append(cell)
  return ','.join(out)


def _result_line(shard_no: int, k: int, case: Case, blank: bool) -> str:
  if blank:
    return ''
  score = score_of(shard_no, k)
  cells = ([f'r{shard_no}-{k}'] if case.tag else []) + [str(int(float(score) >= 0.5)), score]
  return ','.join(cells)


def write_case(root: str, case: Case) -> tuple[str, list[Written]]:
  """Writes a case's shards, results, manifest and schema; returns the manifest and the shards."""
  bp = f'bp-{case.name}'
  pairs, written = {}, []
  for shard_no, shard in enumerate(case.shards, start=1):
    physical: list[tuple[str | None, str, str]] = []  # (row id, meant result, kind) per line
    for k in range(1, shard.rows + 1):
      if k - 1 in shard.empty_at:
        physical.append((None, '', 'empty'))  # an empty observation: the service fails it
      row = _csv(_data_line(shard_no, k, shard))
      meant = _result_line(shard_no, k, case, k - 1 in shard.blanks)
      for i, _ in enumerate(row.split('\n')):
        physical.append((f'r{shard_no}-{k}', meant, 'data') if i == 0 else (None, '', 'half'))
    # The lines above the rows: an input whose first line is not the run's header (expect
    # input_header_mismatch) has no header line, so those lines are rows of it too.
    above = [(None, '', 'empty')] * shard.empty_first + [(None, '', 'header')] * shard.header
    if shard.expect == 'input_header_mismatch':
      physical, offset = above + physical, 1
    else:
      offset = 1 + len(above)
    lines = [_csv(list(shard.columns))] if shard.header else []
    if shard.empty_first:
      lines.insert(0, '')
    text_lines = []
    for k in range(1, shard.rows + 1):
      if k - 1 in shard.empty_at:
        text_lines.append('')
      text_lines.extend(_csv(_data_line(shard_no, k, shard)).split('\n'))
    lines += text_lines + [''] * shard.trailing_empty
    eol = '\r\n' if shard.crlf else '\n'
    data = (eol.join(lines) + eol).encode()
    if shard.bom:
      data = b'\xef\xbb\xbf' + data
    observations = [Observation(offset + i, row_id, meant, kind)
                    for i, (row_id, meant, kind) in enumerate(physical)]
    results = [o.result for o in observations]
    if shard.result == 'logical':  # one line per row, the quoted line break inside it
      results = [o.result for o in observations if o.kind != 'half']
    elif shard.result == 'short_end':
      results = results[:-1]
    elif shard.result == 'short_start':
      results = results[1:]
    elif shard.result == 'long':
      results = results + [_result_line(shard_no, shard.rows + 1, case, False)]
    elif shard.result == 'skip_empty':
      results = [o.result for o in observations if o.kind != 'empty']
    elif shard.result == 'answer_trailing':
      results = results + [''] * shard.trailing_empty
    elif shard.result == 'swap':
      results[1], results[2] = results[2], results[1]
    header = (['tag'] if case.tag else []) + ['bestAnswer', 'score']
    name = f'part-{shard_no}.csv'
    input_path = os.path.join(root, 'input', bp, name)
    result_path = os.path.join(root, 'out', 'batch-prediction', 'result', f'{bp}-{name}.gz')
    for path in (input_path, result_path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(input_path, 'wb') as f:
      f.write(data)
    with open(result_path, 'wb') as f:
      f.write(gzip.compress(('\n'.join([','.join(header)] + results) + '\n').encode()))
    if case.schema:
      schema = {'version': '1.0', 'rowId': 'id' if case.tag else None,
                'dataFileContainsHeader': shard.header if case.has_header is None
                else case.has_header,
                'attributes': [{'attributeName': n, 'attributeType': 'NUMERIC' if n == 'v'
                                else 'CATEGORICAL'} for n in COLUMNS]}
      with open(input_path + '.schema', 'w') as f:
        json.dump(schema, f)
    pairs[input_path] = result_path
    written.append(Written(input_path, result_path, observations, shard.expect))
  manifest = os.path.join(root, 'out', 'batch-prediction', f'{bp}.manifest')
  with open(manifest, 'w') as f:
    json.dump(pairs, f)
  return manifest, written


def read_jsonl_dir(directory: str) -> list[dict]:
  rows = []
  if not os.path.isdir(directory):
    return rows
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name)) as f:
      rows.extend(json.loads(line) for line in f if line.strip())
  return rows


def check(case: Case, written: list[Written], out: str) -> list[str]:
  """Every problem with a run's output, by the case's own knowledge of every row; [] if none."""
  problems = []
  records = read_jsonl_dir(os.path.join(out, 'records'))
  dead = read_jsonl_dir(os.path.join(out, 'dead_letter'))
  with open(os.path.join(out, 'summary.json')) as f:
    summary = json.load(f)
  by_input = {w.input_path: w for w in written}
  shards = {s['input_uri']: s for s in summary['shards']}
  seen: dict[tuple[str, int], str] = {}
  for r in records:
    w = by_input.get(r['input_uri'])
    where = f'record {r["input_uri"]} row {r["row_number"]}'
    if w is None:
      problems.append(f'{where}: no such input')
      continue
    obs = {o.line: o for o in w.observations}.get(r['input_line_number'])
    if obs is None:
      problems.append(f'{where}: input line {r["input_line_number"]} is no observation')
      continue
    key = (w.input_path, obs.line)
    if key in seen:
      problems.append(f'{where}: line {obs.line} also in a {seen[key]}')
    seen[key] = 'record'
    row_id = r.get('id', r.get('col_1'))
    if row_id != obs.row_id:
      problems.append(f'{where}: id {row_id!r} but line {obs.line} holds {obs.row_id!r}')
    if w.expect != JOINED:
      problems.append(f'{where}: a record from a shard that must be refused ({w.expect})')
    if obs.result is None or obs.result == '':
      if r['status'] != 'failed':
        problems.append(f'{where}: status {r["status"]}, but its result is {obs.result!r}')
      continue
    meant = float(obs.result.split(',')[-1])
    if r['status'] != 'ok' or r['score'] != meant:
      problems.append(f'{where} ({row_id}): score {r["score"]} ({r["status"]}), meant {meant}')
    meant_line = 2 + [o for o in w.observations if o.result is not None].index(obs)
    if r['result_line_number'] != meant_line:
      problems.append(f'{where}: result line {r["result_line_number"]}, meant {meant_line}')
  for d in dead:
    w = by_input.get(d['input_uri'])
    where = f'dead letter {d["input_uri"]} row {d["row_number"]} ({d["reason"]})'
    if w is None:
      problems.append(f'{where}: no such input')
      continue
    if not d.get('error'):
      problems.append(f'{where}: no error message')
    if w.expect not in (JOINED, REFUSED) and d['reason'] != w.expect:
      problems.append(f'{where}: expected reason {w.expect}')
    if d['input_line_number'] is None:
      problems.append(f'{where}: a whole-shard dead letter, but the input is readable')
      continue
    obs = {o.line: o for o in w.observations}.get(d['input_line_number'])
    if obs is None:
      problems.append(f'{where}: input line {d["input_line_number"]} is no observation')
      continue
    key = (w.input_path, obs.line)
    if key in seen:
      problems.append(f'{where}: line {obs.line} also in a {seen[key]}')
    seen[key] = 'dead letter'
    if obs.row_id is not None and w.expect == JOINED and d['reason'] != 'bad_input_row':
      problems.append(f'{where}: a good row of a joined shard was dead-lettered')
    cells = next(csv.reader([d['input_line'] or '']), [])
    if obs.row_id is not None and obs.row_id not in cells:
      problems.append(f'{where}: input_line {d["input_line"]!r} is not row {obs.row_id}')
  for w in written:
    missing = [o.line for o in w.observations if (w.input_path, o.line) not in seen]
    if missing:
      problems.append(f'{w.input_path}: observations on lines {missing} are in no output')
    s = shards.get(w.input_path)
    if s is None:
      problems.append(f'{w.input_path}: not in the summary')
      continue
    joined = s['status'] in ('ok', 'ok_with_dead_letters')
    if w.expect == JOINED and not joined:
      problems.append(f'{w.input_path}: refused ({s["status"]}: {s["error"]}), expected joined')
    elif w.expect != JOINED and joined:
      problems.append(f'{w.input_path}: joined, expected refused ({w.expect})')
    if s['input_rows'] != len(w.observations):
      problems.append(f'{w.input_path}: summary says {s["input_rows"]} rows, the input has '
                      f'{len(w.observations)}')
  if not summary['identity']['holds']:
    problems.append(f'identity does not hold: {summary["identity"]["problems"]}')
  return problems
