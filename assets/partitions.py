"""Partitions: one per script, one per avatar (dynamic: added as files arrive), their pairs, and campaigns."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition, MultiPartitionKey, MultiPartitionsDefinition

script_partitions = DynamicPartitionsDefinition(name="script")
avatar_partitions = DynamicPartitionsDefinition(name="avatar")
campaign_partitions = DynamicPartitionsDefinition(name="campaign")
pair_partitions = MultiPartitionsDefinition({"script": script_partitions, "avatar": avatar_partitions})


def pair_partition_key(script: str, avatar: str) -> MultiPartitionKey:
    return MultiPartitionKey({"script": script, "avatar": avatar})


def partition_tags(partition: str | MultiPartitionKey) -> dict[str, str]:
    """The tags Dagster gives a run of ``partition`` (a pair's also name each dimension)."""
    if isinstance(partition, MultiPartitionKey):
        return dict(pair_partitions.get_tags_for_partition_key(partition))
    return {"dagster/partition": partition}


def pair_of(partition_key: object) -> tuple[str, str]:
    """(script, avatar) of a pair partition key, given as a MultiPartitionKey or as its string "avatar|script"."""
    by_dimension = getattr(partition_key, "keys_by_dimension", None)
    if by_dimension is None:
        avatar, _, script = str(partition_key).partition("|")  # dimensions are ordered by name: avatar, script
        return script, avatar
    return by_dimension["script"], by_dimension["avatar"]
