"""One frozen configuration per run, validated once: `RunConfig.from_options(command, options)`.

Everything the graph, the orchestration and the reports need is read from here; defaults live only in
`pipeline/options.py`. A configuration error is a `ConfigError` with one line (exit 2), raised before any data
moves. `to_json` / `from_json` carry a configuration to the shard processes of `--processes`.
"""
import dataclasses
import json
import os
from typing import FrozenSet, Optional, Tuple

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import options as opt
from transforms.io.sources import ReadOptions
from transforms.validate import Limits

DIRECT_RUNNERS = (None, 'DirectRunner', 'direct', 'FnApiRunner')    # all run as Beam's FnApiRunner here


class ConfigError(Exception):
    """Bad configuration: reported as one line, exit status 2."""


def resolve_sample(name_or_path, what='contract'):
    """A path, or the name of a sample shipped in contracts/samples (credit_app, credit_app_tables)."""
    from contracts.samples import resolve
    path = resolve(name_or_path)
    if path is not None:
        return path
    raise ConfigError(f'{what} not found: {name_or_path!r} (a path, or a sample name such as '
                      f'{"credit_app" if what == "contract" else "credit_app_tables"})')


def load_contract_or_fail(name_or_path):
    from contracts import ContractError, load_contract
    path = resolve_sample(name_or_path)
    try:
        return load_contract(path)
    except ContractError as e:
        problems = [ln.strip(' -*') for ln in str(e).splitlines() if ln.strip(' -*')]
        raise ConfigError(f'bad contract {path}: ' + '; '.join(problems)) from None


def guess_table_spec(contract_path):
    """The table spec that goes with a contract, when one lies beside it: the sample `<name>_tables.json` of a
    sample contract, or `tables.json` / `<name>_tables.json` in the contract's folder (the existing system keeps
    contract.json and tables.json side by side). None when there is none."""
    if not contract_path:
        return None
    folder, name = os.path.split(os.path.abspath(contract_path))
    stem = os.path.splitext(name)[0]
    for cand in (os.path.join(folder, f'{stem}_tables.json'), os.path.join(folder, 'tables.json')):
        if os.path.isfile(cand) and os.path.abspath(cand) != os.path.abspath(contract_path):
            return cand
    return None


def create_tables_command(contract, target, tables=None, dialect=None):
    """The `create-tables` command line that creates what `run` (or `check`) found missing, for the operator to
    copy, in backticks: the run's own contract, table spec (or the one beside the contract) and target,
    shell-quoted. A literal password in the target is masked (never printed; a note then says so), a `${VAR}`
    placeholder is kept."""
    import shlex
    from transforms.sql.targets import command_line_target
    tables = tables or guess_table_spec(contract)
    shown, masked = command_line_target(target) if target else ('TARGET', False)
    argv = ['python', '-m', 'pipeline', 'create-tables', '--contract', contract or 'CONTRACT',
            '--tables', tables or 'SPEC', '--target', shown]
    if dialect:
        argv += ['--dialect', dialect]
    cmd = ' '.join(a if a in ('CONTRACT', 'SPEC', 'TARGET') else shlex.quote(a) for a in argv)
    notes = []
    if not tables:
        notes.append('SPEC: the table spec, like tables.json')
    if masked:
        notes.append('put the password back where *** stands, or pass it as ${VAR}')
    return f'`{cmd}`' + (f' ({"; ".join(notes)})' if notes else '')


def is_table_url(s):
    return isinstance(s, str) and s.startswith(('sqlite:', 'odbc:'))


def _read_app_ids(path) -> FrozenSet[int]:
    try:
        with open(path, encoding='utf-8') as f:
            lines = [ln.strip() for ln in f]
    except OSError as e:
        raise ConfigError(f'--app-ids {path}: cannot read it ({e.strerror or e})') from None
    ids = set()
    for n, ln in enumerate(lines, 1):
        if not ln or ln.startswith('#'):
            continue
        if not ln.isascii() or not ln.isdigit():
            raise ConfigError(f'--app-ids {path}: line {n} is not an app_id (one integer per line)')
        ids.add(int(ln))
    if not ids:
        raise ConfigError(f'--app-ids {path}: the file lists no app_id')
    return frozenset(ids)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    command: str                                  # run | map | verify
    contract_path: str
    source: str
    target: Optional[str]
    dialect: Optional[str]
    source_table: Optional[str]
    source_column: Optional[str]
    record_element: Optional[str]
    tables: Optional[str]                         # resolved table spec path
    create_tables: bool
    read: ReadOptions
    only_failed: bool
    app_ids: Optional[FrozenSet[int]]
    limits: Limits
    parse_mode: str
    batch_size: int
    sink_shards: int
    chunk_docs: int                               # 0 = one run
    processes: int
    rows_out: Optional[str]                       # map --output
    dead_letter: Optional[str]
    status: Optional[str]
    summary_json: Optional[str]
    metrics_json: Optional[str]
    report: Optional[str]
    work_dir: Optional[str]
    progress_seconds: float
    max_dead_letter_rate: float
    session_id: Optional[str]
    log_level: str
    sample: Optional[int]
    verify_json: Optional[str]
    beam_args: Tuple[str, ...]
    # internal: session_id was made by this job's launcher (not given with --session-id, which a user may reuse), so
    # a ledger row of this session was written by this run: the sink does not count it as an earlier version
    session_is_new: bool = False

    @property
    def is_direct(self) -> bool:
        return PipelineOptions(list(self.beam_args)).view_as(StandardOptions).runner in DIRECT_RUNNERS

    @property
    def source_is_table(self) -> bool:
        return is_table_url(self.source)

    def contract(self):
        return load_contract_or_fail(self.contract_path)

    def replace(self, **kw) -> 'RunConfig':
        return dataclasses.replace(self, **kw)

    # -- for the shard processes of --processes
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d['read'] = self.read._asdict()
        d['limits'] = self.limits._asdict()
        d['app_ids'] = sorted(self.app_ids) if self.app_ids is not None else None
        d['beam_args'] = list(self.beam_args)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text) -> 'RunConfig':
        d = json.loads(text)
        d['read'] = ReadOptions(**d['read'])
        d['limits'] = Limits(**d['limits'])
        d['app_ids'] = frozenset(d['app_ids']) if d['app_ids'] is not None else None
        d['beam_args'] = tuple(d['beam_args'])
        return cls(**d)

    # -- from the command line
    @classmethod
    def from_options(cls, command: str, ns, beam_args=()) -> 'RunConfig':
        """Validate the parsed options of `command` once; every problem is a one-line ConfigError."""
        g = lambda name, default=None: getattr(ns, name, default)          # noqa: E731 (options a command lacks)
        source = g('source') if command != 'map' else (g('input') or g('source'))
        need = ['contract'] + (['source', 'target'] if command in ('run', 'verify') else ['input', 'output'])
        for n in need:
            if not (source if n in ('source', 'input') else g(n)):
                raise ConfigError(f'--{n} is required (see --help)')
        contract_path = resolve_sample(g('contract'))
        limits = _limits(ns)
        read = _read_options(ns, command)._replace(max_doc_bytes=limits.max_doc_bytes)
        table = is_table_url(source)
        if not table:
            # Options that only a table source reads are an error here, given with any value (even the
            # default's): an option that is silently ignored makes an operator believe the run is restricted.
            for flag, v in (('--app-id-start', read.app_id_start), ('--app-id-end', read.app_id_end),
                            ('--app-ids', g('app_ids')),
                            ('--source-table', g('source_table')), ('--source-column', g('source_column')),
                            ('--partitions', g('partitions')), ('--fetch-size', g('fetch_size'))):
                if v is not None:
                    raise ConfigError(f'{flag} applies to a table source (sqlite:/// or odbc:), not to '
                                      f'{"a folder of files" if not os.path.isfile(source or "") else "a file"}')
            if g('record_element') and not os.path.isfile(source or ''):
                raise ConfigError('--record-element applies to one XML file holding many documents, not to a '
                                  'folder of files')
        elif g('record_element'):
            raise ConfigError('--record-element applies to one XML file holding many documents, not to a table')
        if g('only_failed') and g('app_ids'):
            raise ConfigError('--only-failed and --app-ids do not combine: give one list of documents')
        if g('only_failed') and not g('resume', True):
            raise ConfigError('--only-failed reads the failed documents of the ledger: it does not combine with '
                              '--no-resume')
        # map writes no database: only a map that mapped nothing exits 4 (the rate check is run's)
        rate = g('max_dead_letter_rate', opt.DEFAULT_MAX_DEAD_LETTER_RATE if command != 'map' else 1.0)
        if not 0.0 <= rate <= 1.0:
            raise ConfigError('--max-dead-letter-rate must be a fraction between 0 and 1 (e.g. 0.1 for 10 %)')
        for name in ('batch_size', 'sink_shards'):
            if g(name, 1) < 1:
                raise ConfigError(f'--{name.replace("_", "-")} must be at least 1')
        processes = g('processes', 1)
        if processes < 1:
            raise ConfigError('--processes must be at least 1')
        chunk = g('chunk_docs')
        beam_args = tuple(beam_args)
        direct = PipelineOptions(list(beam_args)).view_as(StandardOptions).runner in DIRECT_RUNNERS
        if chunk is None:
            chunk = opt.DEFAULT_CHUNK_DOCS if direct else 0
        if chunk < 0:
            raise ConfigError('--chunk-docs must be 0 (one run) or more')
        if processes > 1:
            if read.shard_count is not None:
                raise ConfigError('--processes shards the job itself: it does not combine with '
                                  '--shard-count/--shard-index')
            if not direct:
                raise ConfigError('--processes is for local runs; on a cluster runner the runner spreads the work')
            if table and read.limit is not None:
                raise ConfigError('--limit does not combine with --processes for a table source (each shard would '
                                  'take its own N); run one process, or use --app-id-start/--app-id-end')
        if g('progress_seconds', 0) < 0:
            raise ConfigError('--progress-seconds must be 0 (off) or more')
        tables = resolve_sample(g('tables'), 'table spec') if g('tables') else None
        if g('create_tables') and not tables:
            raise ConfigError('--create-tables needs --tables SPEC (e.g. --tables credit_app_tables)')
        sample = g('sample')
        if sample is not None and sample < 1:
            raise ConfigError('--sample must be at least 1')
        return cls(command=command, contract_path=contract_path, source=source, target=g('target'),
                   dialect=g('dialect'), source_table=g('source_table'), source_column=g('source_column'),
                   record_element=g('record_element'), tables=tables, create_tables=bool(g('create_tables')),
                   read=read, only_failed=bool(g('only_failed')),
                   app_ids=_read_app_ids(g('app_ids')) if g('app_ids') else None, limits=limits,
                   parse_mode=g('parse_mode', 'partial'), batch_size=g('batch_size', opt.DEFAULT_BATCH_SIZE),
                   sink_shards=g('sink_shards', opt.DEFAULT_SINK_SHARDS), chunk_docs=chunk, processes=processes,
                   rows_out=g('output') if command == 'map' else None, dead_letter=g('dead_letter'),
                   status=g('status'), summary_json=g('summary_json'), metrics_json=g('metrics_json'),
                   report=g('report'), work_dir=g('work_dir'),
                   progress_seconds=g('progress_seconds', opt.DEFAULT_PROGRESS_SECONDS),
                   max_dead_letter_rate=rate, session_id=g('session_id'), log_level=g('log_level', 'INFO'),
                   sample=sample, verify_json=g('verify_json'), beam_args=beam_args)


def _limits(ns) -> Limits:
    if ns.max_depth > 256 or ns.max_depth < 2:
        raise ConfigError('--max-depth must be between 2 and 256')
    if not ns.max_doc_mb > 0:
        raise ConfigError('--max-doc-mb must be above 0')
    if ns.max_elements < 1 or ns.max_attributes < 1 or ns.max_parse_seconds < 0:
        raise ConfigError('--max-elements and --max-attributes must be at least 1, --max-parse-seconds at least 0')
    return Limits(max_doc_bytes=int(ns.max_doc_mb * 1024 * 1024), max_depth=ns.max_depth,
                  max_elements=ns.max_elements, max_attributes=ns.max_attributes,
                  max_parse_seconds=ns.max_parse_seconds)


def _read_options(ns, command) -> ReadOptions:
    g = lambda name, default=None: getattr(ns, name, default)          # noqa: E731
    sc, si = g('shard_count'), g('shard_index')
    if (sc is None) != (si is None):
        raise ConfigError('--shard-count and --shard-index go together')
    if sc is not None and not (sc >= 1 and 0 <= si < sc):
        raise ConfigError('--shard-index must be in 0 .. shard-count-1')
    a, b = g('app_id_start'), g('app_id_end')
    if a is not None and b is not None and a > b:
        raise ConfigError('--app-id-start is after --app-id-end')
    if g('limit') is not None and g('limit') < 1:
        raise ConfigError('--limit must be at least 1')
    partitions, fetch = g('partitions'), g('fetch_size')
    partitions = opt.DEFAULT_PARTITIONS if partitions is None else partitions
    fetch = opt.DEFAULT_FETCH_SIZE if fetch is None else fetch
    if partitions < 1 or fetch < 1:
        raise ConfigError('--partitions and --fetch-size must be at least 1')
    return ReadOptions(app_id_start=a, app_id_end=b, limit=g('limit'), partitions=partitions, shard_count=sc,
                       shard_index=si, fetch_size=fetch, resume=bool(g('resume', False)) and command == 'run')
