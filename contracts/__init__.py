"""Mapping contracts: model and validation (``load_contract``), compiled mapper (``compile_contract``),
expression language (``contracts.expressions``)."""
from contracts.errors import ContractError, MappingError
from contracts.model import Contract, load_contract
from contracts.compiler import CompiledContract, MapResult, compile_contract

__all__ = ['ContractError', 'MappingError', 'Contract', 'load_contract', 'CompiledContract', 'MapResult',
           'compile_contract']
