"""The hosted resource types: their models, their rules, and how references are found."""

from .registry import HOSTED_TYPES, ResourceType, get_type, is_hosted

__all__ = ["HOSTED_TYPES", "ResourceType", "get_type", "is_hosted"]
