"""Mapping contracts: model and validation (``load_contract``), compiled mapper (``compile_contract``),
expression language (``contracts.expressions``)."""
from contracts.errors import ContractError, MappingError
from contracts.loader import load_contract
from contracts.model import Contract
from contracts.compiler import CompiledContract, MapResult, compile_contract

__all__ = ['ContractError', 'MappingError', 'Contract', 'load_contract', 'CompiledContract', 'MapResult',
           'compile_contract']
