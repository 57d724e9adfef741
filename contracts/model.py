"""The mapping contract's model: its vocabulary (data types, mapping types, the fixed columns of the row-creating
types, the meaningful-data rule) and the classes a loaded contract is made of (`Contract`, `Mapping`, `FilterRule`,
`Relationship`, `Step`). Loading and validation are in `contracts.loader`. The format is the existing system's
(SPEC §1); see `contracts/contract.schema.json` and `docs/design.md`.
"""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from contracts.errors import ContractError

# ---------------------------------------------------------------------------------------------------------------------
# vocabulary

DATA_TYPES = frozenset({'string', 'int', 'smallint', 'tinyint', 'bigint', 'decimal', 'float', 'bit', 'boolean',
                        'datetime', 'date', 'smalldatetime'})
INT_TYPES = frozenset({'int', 'smallint', 'tinyint', 'bigint'})
DATE_TYPES = frozenset({'datetime', 'date', 'smalldatetime'})

# plain steps (no argument)
PLAIN_STEPS = frozenset({'direct', 'enum', 'calculated_field', 'char_to_bit', 'boolean_to_bit', 'numbers_only',
                         'extract_numeric', 'identity_insert', 'last_valid_pr_contact', 'last_valid_sec_contact',
                         'authu_contact', 'curr_address_only', 'extract_date', 'default_getutcdate_if_null',
                         'add_history'})
# steps with an argument in parentheses: name -> (argument required, argument must be an int)
ARG_STEPS = {'add_score': (True, False), 'add_indicator': (True, False), 'add_report_lookup': (True, False),
             'add_collateral': (True, True), 'warranty_field': (True, True), 'policy_exceptions': (False, True)}


class RowShape(NamedTuple):
    """The fixed columns of the rows a row-creating mapping type makes: the existing system's table layouts
    (SPEC §1.3), declared once here. ``None``: the type has no such column."""
    arg_column: Optional[str] = None      # gets the step's argument: add_score(AJ) -> score_identifier = 'AJ'
    value_column: Optional[str] = None    # gets the mapped value (policy exceptions: unless target_column names one)
    name_column: Optional[str] = None     # gets the attribute's name (add_history: '[attr]')
    source_column: Optional[str] = None   # add_history: '[element]', the last segment of xml_path
    notes_column: Optional[str] = None    # policy_exceptions(): the shared notes


# steps that make rows of their own (key/value or slot rows) instead of filling a column
ROW_SHAPES = {
    'add_score': RowShape(arg_column='score_identifier', value_column='score'),
    'add_indicator': RowShape(arg_column='indicator', value_column='value'),
    'add_history': RowShape(name_column='name', source_column='source', value_column='value'),
    'add_report_lookup': RowShape(arg_column='source_report_key', name_column='name', value_column='value'),
    'policy_exceptions': RowShape(arg_column='policy_exception_type_enum', value_column='reason_code',
                                  notes_column='notes'),
    'warranty_field': RowShape(arg_column='warranty_type_enum'),
    'add_collateral': RowShape(arg_column='sort_order'),
}
ROW_CREATING = frozenset(ROW_SHAPES)
# steps that choose the element the value is read from (must come first in a chain)
EXTRACTORS = frozenset({'last_valid_pr_contact', 'last_valid_sec_contact', 'authu_contact', 'curr_address_only'})

REQUIRED_TOP = ('xml_root_element', 'xml_application_path', 'source_table', 'source_column',
                'source_application_table', 'target_schema', 'table_insertion_order', 'mappings',
                'element_filtering', 'relationships')
OPTIONAL_DICT_TOP = ('enum_mappings', 'bit_conversions')
LOG_TABLE = 'processing_log'

# enum type resolution by column-name substring (SPEC §1.6), in order
ENUM_SUBSTRINGS = (('status', 'status_enum'), ('process', 'process_enum'), ('app_source', 'app_source_enum'),
                   ('contact_type', 'contact_type_enum'), ('address_type', 'address_type_enum'),
                   ('ownership_type', 'ownership_type_enum'), ('employment_type', 'employment_type_enum'),
                   ('other_income_type', 'other_income_type_enum'), ('income_type', 'income_type_enum'),
                   ('population_assignment', 'population_assignment_enum'), ('decision', 'decision_enum'))

# The existing system's "meaningful data" rule for rows under a contact (SPEC §1.9): an address or employment row is
# written only when one of these target columns holds a value from the document (not a default). They are target
# schema names, shared by both product lines; a rule may name its own with the optional key ``meaningful_columns``.
DEFAULT_MEANINGFUL_COLUMNS = {
    'address': ('street_number', 'street_name', 'address_line_1', 'address_line_2', 'po_box', 'rural_route', 'city',
                'state', 'zip'),
    'employment': ('business_name', 'monthly_salary', 'salary', 'job_title', 'zip', 'city'),
}



class Step:
    """One parsed ``mapping_type`` token: ``name`` and optional ``arg`` (str, or int for slot/enum arguments)."""
    __slots__ = ('name', 'arg', 'token')

    def __init__(self, name, arg, token):
        self.name, self.arg, self.token = name, arg, token

    def __repr__(self):
        return f'Step({self.token!r})'


class Mapping:
    """One validated entry of ``mappings[]``."""
    __slots__ = ('index', 'raw', 'xml_path', 'xml_attribute', 'target_table', 'target_column', 'data_type',
                 'data_length', 'steps', 'nullable', 'default_value', 'has_default', 'exclude_default_when_empty',
                 'expression', 'enum_name', 'enum_type')

    def __init__(self, index, raw):
        self.index = index
        self.raw = raw

    @property
    def label(self):
        return f'mappings[{self.index}] ({self.target_table}.{self.target_column})'

    @property
    def step_names(self):
        return [s.name for s in self.steps]

    def __repr__(self):
        return f'<Mapping {self.label}>'


class FilterRule:
    """One ``element_filtering.filter_rules[]`` entry."""
    __slots__ = ('index', 'element_type', 'parent_path', 'child_path', 'required', 'type_attribute', 'type_values',
                 'meaningful_columns')

    def __init__(self, index, element_type, parent_path, child_path, required, meaningful_columns=None):
        self.index, self.element_type, self.parent_path, self.child_path = index, element_type, parent_path, child_path
        self.required = required                      # attribute -> True | [allowed values] (order = priority)
        # target columns whose document data makes a row worth writing (None: any column's data does)
        self.meaningful_columns = (tuple(meaningful_columns) if meaningful_columns is not None
                                   else DEFAULT_MEANINGFUL_COLUMNS.get(element_type))
        self.type_attribute, self.type_values = None, ()
        for k, v in required.items():                 # "type" = first key whose value is a non-empty list
            if isinstance(v, list) and v:
                self.type_attribute, self.type_values = k, tuple(v)
                break

    @property
    def element_name(self):
        return self.child_path.rsplit('/', 1)[-1]


class Relationship:
    __slots__ = ('index', 'parent_table', 'child_table', 'foreign_key_column', 'xml_parent_path', 'xml_child_path')

    def __init__(self, index, **kw):
        self.index = index
        for k, v in kw.items():
            setattr(self, k, v)


class Contract:
    """A loaded, validated mapping contract."""

    def __init__(self, raw, mappings, filter_rules, relationships, source_name=None):
        self.raw = raw
        self.source_name = source_name
        self.mappings: List[Mapping] = mappings
        self.filter_rules: List[FilterRule] = filter_rules
        self.relationships: List[Relationship] = relationships
        self.source_table = raw['source_table']
        self.source_column = raw['source_column']
        self.target_schema = raw['target_schema']
        self.root_element = raw['xml_root_element']
        self.application_path = raw['xml_application_path']
        self.source_application_table = raw['source_application_table']
        self.table_order = [t for t in raw['table_insertion_order'] if t != LOG_TABLE]
        self.enum_mappings: Dict[str, Dict[str, Any]] = raw.get('enum_mappings') or {}
        self.bit_conversions: Dict[str, Dict[str, Any]] = raw.get('bit_conversions') or {}

    @property
    def app_id_source(self) -> Tuple[str, str]:
        """(xml_path, xml_attribute) of the mapping that fills app_id of the first table."""
        m = self.app_id_mapping
        return (m.xml_path, m.xml_attribute)

    @property
    def app_id_mapping(self) -> Mapping:
        first = self.table_order[0]
        for m in self.mappings:
            if m.target_table == first and m.target_column == 'app_id':
                return m
        raise ContractError(f'table_insertion_order[0] ({first}): no mapping fills {first}.app_id')

    def tables(self) -> List[str]:
        """Target tables used by the mappings, in insertion order."""
        used = {m.target_table for m in self.mappings}
        return [t for t in self.table_order if t in used]

    def rule(self, element_type) -> Optional[FilterRule]:
        for r in self.filter_rules:
            if r.element_type == element_type:
                return r
        return None

    def enum_table(self, m: Mapping) -> Optional[Dict[str, Any]]:
        return self.enum_mappings.get(m.enum_type) if m.enum_type else None
