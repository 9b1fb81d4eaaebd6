from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddArguments(_message.Message):
    __slots__ = ("content", "tier", "importance", "visibility", "metadata_json", "ttl")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    content: str
    tier: str
    importance: float
    visibility: str
    metadata_json: str
    ttl: str
    def __init__(self, content: _Optional[str] = ..., tier: _Optional[str] = ..., importance: _Optional[float] = ..., visibility: _Optional[str] = ..., metadata_json: _Optional[str] = ..., ttl: _Optional[str] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: AddArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[AddArguments, _Mapping]] = ...) -> None: ...

class MemoryRecord(_message.Message):
    __slots__ = ("id", "user_id", "agent_id", "session_id", "tier", "content", "content_hash", "importance", "visibility", "metadata_json", "created_at", "updated_at", "last_accessed_at", "access_count", "expires_at", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCESSED_AT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: int
    user_id: str
    agent_id: str
    session_id: str
    tier: str
    content: str
    content_hash: str
    importance: float
    visibility: str
    metadata_json: str
    created_at: str
    updated_at: str
    last_accessed_at: str
    access_count: int
    expires_at: str
    version: int
    def __init__(self, id: _Optional[int] = ..., user_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., tier: _Optional[str] = ..., content: _Optional[str] = ..., content_hash: _Optional[str] = ..., importance: _Optional[float] = ..., visibility: _Optional[str] = ..., metadata_json: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., last_accessed_at: _Optional[str] = ..., access_count: _Optional[int] = ..., expires_at: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class AddReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: MemoryRecord
    def __init__(self, result: _Optional[_Union[MemoryRecord, _Mapping]] = ...) -> None: ...

class AddManyArguments(_message.Message):
    __slots__ = ("items_json",)
    ITEMS_JSON_FIELD_NUMBER: _ClassVar[int]
    items_json: str
    def __init__(self, items_json: _Optional[str] = ...) -> None: ...

class AddManyRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: AddManyArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[AddManyArguments, _Mapping]] = ...) -> None: ...

class AddManyReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[MemoryRecord]
    def __init__(self, result: _Optional[_Iterable[_Union[MemoryRecord, _Mapping]]] = ...) -> None: ...

class GetArguments(_message.Message):
    __slots__ = ("memory_id",)
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    memory_id: int
    def __init__(self, memory_id: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: GetArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[GetArguments, _Mapping]] = ...) -> None: ...

class GetReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: MemoryRecord
    def __init__(self, result: _Optional[_Union[MemoryRecord, _Mapping]] = ...) -> None: ...

class UpdateArguments(_message.Message):
    __slots__ = ("memory_id", "version", "content", "tier", "importance", "metadata_json")
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    memory_id: int
    version: int
    content: str
    tier: str
    importance: float
    metadata_json: str
    def __init__(self, memory_id: _Optional[int] = ..., version: _Optional[int] = ..., content: _Optional[str] = ..., tier: _Optional[str] = ..., importance: _Optional[float] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: UpdateArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[UpdateArguments, _Mapping]] = ...) -> None: ...

class UpdateReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: MemoryRecord
    def __init__(self, result: _Optional[_Union[MemoryRecord, _Mapping]] = ...) -> None: ...

class ListArguments(_message.Message):
    __slots__ = ("tier", "session", "metadata_json", "created_after", "created_before", "before_id", "limit")
    TIER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tier: str
    session: str
    metadata_json: str
    created_after: str
    created_before: str
    before_id: int
    limit: int
    def __init__(self, tier: _Optional[str] = ..., session: _Optional[str] = ..., metadata_json: _Optional[str] = ..., created_after: _Optional[str] = ..., created_before: _Optional[str] = ..., before_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: ListArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[ListArguments, _Mapping]] = ...) -> None: ...

class ListReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[MemoryRecord]
    def __init__(self, result: _Optional[_Iterable[_Union[MemoryRecord, _Mapping]]] = ...) -> None: ...

class DeleteArguments(_message.Message):
    __slots__ = ("memory_id",)
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    memory_id: int
    def __init__(self, memory_id: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: DeleteArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[DeleteArguments, _Mapping]] = ...) -> None: ...

class DeleteReply(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class ShareArguments(_message.Message):
    __slots__ = ("memory_id", "tag_json", "tier", "agents", "teams", "access", "expires_at")
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_JSON_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    memory_id: int
    tag_json: str
    tier: str
    agents: _containers.RepeatedScalarFieldContainer[str]
    teams: _containers.RepeatedScalarFieldContainer[str]
    access: str
    expires_at: str
    def __init__(self, memory_id: _Optional[int] = ..., tag_json: _Optional[str] = ..., tier: _Optional[str] = ..., agents: _Optional[_Iterable[str]] = ..., teams: _Optional[_Iterable[str]] = ..., access: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class ShareRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: ShareArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[ShareArguments, _Mapping]] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("id", "user_id", "owner_agent", "target", "memory_id", "tier", "tag_json", "grantee_type", "grantee", "access", "created_at", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_AGENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MEMORY_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TAG_JSON_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_TYPE_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    user_id: str
    owner_agent: str
    target: str
    memory_id: int
    tier: str
    tag_json: str
    grantee_type: str
    grantee: str
    access: str
    created_at: str
    expires_at: str
    def __init__(self, id: _Optional[int] = ..., user_id: _Optional[str] = ..., owner_agent: _Optional[str] = ..., target: _Optional[str] = ..., memory_id: _Optional[int] = ..., tier: _Optional[str] = ..., tag_json: _Optional[str] = ..., grantee_type: _Optional[str] = ..., grantee: _Optional[str] = ..., access: _Optional[str] = ..., created_at: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class ShareReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[Grant]
    def __init__(self, result: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ...) -> None: ...

class RevokeArguments(_message.Message):
    __slots__ = ("grant_id",)
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    grant_id: int
    def __init__(self, grant_id: _Optional[int] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: RevokeArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[RevokeArguments, _Mapping]] = ...) -> None: ...

class RevokeReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: Grant
    def __init__(self, result: _Optional[_Union[Grant, _Mapping]] = ...) -> None: ...

class GrantsArguments(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: bool
    def __init__(self, received: _Optional[bool] = ...) -> None: ...

class GrantsRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: GrantsArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[GrantsArguments, _Mapping]] = ...) -> None: ...

class GrantsReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[Grant]
    def __init__(self, result: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ...) -> None: ...

class SearchArguments(_message.Message):
    __slots__ = ("query", "limit", "tiers", "session", "metadata_json", "created_after", "created_before")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    query: str
    limit: int
    tiers: _containers.RepeatedScalarFieldContainer[str]
    session: str
    metadata_json: str
    created_after: str
    created_before: str
    def __init__(self, query: _Optional[str] = ..., limit: _Optional[int] = ..., tiers: _Optional[_Iterable[str]] = ..., session: _Optional[str] = ..., metadata_json: _Optional[str] = ..., created_after: _Optional[str] = ..., created_before: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: SearchArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[SearchArguments, _Mapping]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("memory", "score", "keyword_score", "vector_score")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_SCORE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SCORE_FIELD_NUMBER: _ClassVar[int]
    memory: MemoryRecord
    score: float
    keyword_score: float
    vector_score: float
    def __init__(self, memory: _Optional[_Union[MemoryRecord, _Mapping]] = ..., score: _Optional[float] = ..., keyword_score: _Optional[float] = ..., vector_score: _Optional[float] = ...) -> None: ...

class SearchReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, result: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class InjectArguments(_message.Message):
    __slots__ = ("query", "budget_tokens")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    query: str
    budget_tokens: int
    def __init__(self, query: _Optional[str] = ..., budget_tokens: _Optional[int] = ...) -> None: ...

class InjectRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: InjectArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[InjectArguments, _Mapping]] = ...) -> None: ...

class ContextItem(_message.Message):
    __slots__ = ("section", "text", "source", "score", "tokens")
    SECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    section: str
    text: str
    source: str
    score: float
    tokens: int
    def __init__(self, section: _Optional[str] = ..., text: _Optional[str] = ..., source: _Optional[str] = ..., score: _Optional[float] = ..., tokens: _Optional[int] = ...) -> None: ...

class InjectedContext(_message.Message):
    __slots__ = ("items", "text", "tokens", "budget", "overflow", "left_out", "compacted", "promoted", "disabled_by", "shared_memories")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    DISABLED_BY_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORIES_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ContextItem]
    text: str
    tokens: int
    budget: int
    overflow: bool
    left_out: int
    compacted: _containers.RepeatedScalarFieldContainer[int]
    promoted: _containers.RepeatedScalarFieldContainer[int]
    disabled_by: str
    shared_memories: _containers.RepeatedCompositeFieldContainer[MemoryRecord]
    def __init__(self, items: _Optional[_Iterable[_Union[ContextItem, _Mapping]]] = ..., text: _Optional[str] = ..., tokens: _Optional[int] = ..., budget: _Optional[int] = ..., overflow: _Optional[bool] = ..., left_out: _Optional[int] = ..., compacted: _Optional[_Iterable[int]] = ..., promoted: _Optional[_Iterable[int]] = ..., disabled_by: _Optional[str] = ..., shared_memories: _Optional[_Iterable[_Union[MemoryRecord, _Mapping]]] = ...) -> None: ...

class InjectReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: InjectedContext
    def __init__(self, result: _Optional[_Union[InjectedContext, _Mapping]] = ...) -> None: ...

class ResumeArguments(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: ResumeArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[ResumeArguments, _Mapping]] = ...) -> None: ...

class SessionCheckpoint(_message.Message):
    __slots__ = ("user_id", "session_id", "agent_id", "checkpoint_seq", "state_json", "created_at", "expires_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    session_id: str
    agent_id: str
    checkpoint_seq: int
    state_json: str
    created_at: str
    expires_at: str
    def __init__(self, user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., checkpoint_seq: _Optional[int] = ..., state_json: _Optional[str] = ..., created_at: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class ResumedSession(_message.Message):
    __slots__ = ("checkpoint", "working_memory")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    WORKING_MEMORY_FIELD_NUMBER: _ClassVar[int]
    checkpoint: SessionCheckpoint
    working_memory: _containers.RepeatedCompositeFieldContainer[MemoryRecord]
    def __init__(self, checkpoint: _Optional[_Union[SessionCheckpoint, _Mapping]] = ..., working_memory: _Optional[_Iterable[_Union[MemoryRecord, _Mapping]]] = ...) -> None: ...

class ResumeReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: ResumedSession
    def __init__(self, result: _Optional[_Union[ResumedSession, _Mapping]] = ...) -> None: ...

class SetPreferenceArguments(_message.Message):
    __slots__ = ("key", "value_json", "confidence")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value_json: str
    confidence: float
    def __init__(self, key: _Optional[str] = ..., value_json: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class SetPreferenceRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: SetPreferenceArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[SetPreferenceArguments, _Mapping]] = ...) -> None: ...

class Preference(_message.Message):
    __slots__ = ("user_id", "key", "value_json", "source_agent", "confidence", "created_at", "updated_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_AGENT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    key: str
    value_json: str
    source_agent: str
    confidence: float
    created_at: str
    updated_at: str
    def __init__(self, user_id: _Optional[str] = ..., key: _Optional[str] = ..., value_json: _Optional[str] = ..., source_agent: _Optional[str] = ..., confidence: _Optional[float] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ...) -> None: ...

class SetPreferenceReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: Preference
    def __init__(self, result: _Optional[_Union[Preference, _Mapping]] = ...) -> None: ...

class GetPreferenceArguments(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetPreferenceRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: GetPreferenceArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[GetPreferenceArguments, _Mapping]] = ...) -> None: ...

class GetPreferenceReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: Preference
    def __init__(self, result: _Optional[_Union[Preference, _Mapping]] = ...) -> None: ...

class ListPreferencesArguments(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPreferencesRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: ListPreferencesArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[ListPreferencesArguments, _Mapping]] = ...) -> None: ...

class ListPreferencesReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[Preference]
    def __init__(self, result: _Optional[_Iterable[_Union[Preference, _Mapping]]] = ...) -> None: ...

class DeletePreferenceArguments(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class DeletePreferenceRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: DeletePreferenceArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[DeletePreferenceArguments, _Mapping]] = ...) -> None: ...

class DeletePreferenceReply(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class RecordPatternArguments(_message.Message):
    __slots__ = ("language", "name", "snippet", "description", "tags")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    language: str
    name: str
    snippet: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, language: _Optional[str] = ..., name: _Optional[str] = ..., snippet: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordPatternRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: RecordPatternArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[RecordPatternArguments, _Mapping]] = ...) -> None: ...

class CodePattern(_message.Message):
    __slots__ = ("id", "user_id", "agent_id", "language", "name", "description", "snippet", "tags", "usage_count", "last_used_at", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    USAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    user_id: str
    agent_id: str
    language: str
    name: str
    description: str
    snippet: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    usage_count: int
    last_used_at: str
    created_at: str
    updated_at: str
    def __init__(self, id: _Optional[int] = ..., user_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., language: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., snippet: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., usage_count: _Optional[int] = ..., last_used_at: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ...) -> None: ...

class RecordPatternReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: CodePattern
    def __init__(self, result: _Optional[_Union[CodePattern, _Mapping]] = ...) -> None: ...

class UsePatternArguments(_message.Message):
    __slots__ = ("pattern_id",)
    PATTERN_ID_FIELD_NUMBER: _ClassVar[int]
    pattern_id: int
    def __init__(self, pattern_id: _Optional[int] = ...) -> None: ...

class UsePatternRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: UsePatternArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[UsePatternArguments, _Mapping]] = ...) -> None: ...

class UsePatternReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: CodePattern
    def __init__(self, result: _Optional[_Union[CodePattern, _Mapping]] = ...) -> None: ...

class FindPatternsArguments(_message.Message):
    __slots__ = ("language", "tag", "text", "limit")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    language: str
    tag: str
    text: str
    limit: int
    def __init__(self, language: _Optional[str] = ..., tag: _Optional[str] = ..., text: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class FindPatternsRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: FindPatternsArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[FindPatternsArguments, _Mapping]] = ...) -> None: ...

class FindPatternsReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[CodePattern]
    def __init__(self, result: _Optional[_Iterable[_Union[CodePattern, _Mapping]]] = ...) -> None: ...

class SaveStateArguments(_message.Message):
    __slots__ = ("state_json", "ttl")
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    state_json: str
    ttl: str
    def __init__(self, state_json: _Optional[str] = ..., ttl: _Optional[str] = ...) -> None: ...

class SaveStateRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: SaveStateArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[SaveStateArguments, _Mapping]] = ...) -> None: ...

class SaveStateReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: SessionCheckpoint
    def __init__(self, result: _Optional[_Union[SessionCheckpoint, _Mapping]] = ...) -> None: ...

class LoadStateArguments(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadStateRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: LoadStateArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[LoadStateArguments, _Mapping]] = ...) -> None: ...

class LoadStateReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: SessionCheckpoint
    def __init__(self, result: _Optional[_Union[SessionCheckpoint, _Mapping]] = ...) -> None: ...

class MergeContextArguments(_message.Message):
    __slots__ = ("patch_json", "seen", "timestamp", "ttl")
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    patch_json: str
    seen: int
    timestamp: str
    ttl: str
    def __init__(self, patch_json: _Optional[str] = ..., seen: _Optional[int] = ..., timestamp: _Optional[str] = ..., ttl: _Optional[str] = ...) -> None: ...

class MergeContextRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: MergeContextArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[MergeContextArguments, _Mapping]] = ...) -> None: ...

class ContextWrite(_message.Message):
    __slots__ = ("agent", "timestamp", "seq", "value_json")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    agent: str
    timestamp: str
    seq: int
    value_json: str
    def __init__(self, agent: _Optional[str] = ..., timestamp: _Optional[str] = ..., seq: _Optional[int] = ..., value_json: _Optional[str] = ...) -> None: ...

class ContextConflict(_message.Message):
    __slots__ = ("key", "kept", "overridden")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    kept: ContextWrite
    overridden: ContextWrite
    def __init__(self, key: _Optional[str] = ..., kept: _Optional[_Union[ContextWrite, _Mapping]] = ..., overridden: _Optional[_Union[ContextWrite, _Mapping]] = ...) -> None: ...

class MergedContext(_message.Message):
    __slots__ = ("state_json", "checkpoint_seq", "event_seq", "conflicts")
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQ_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    state_json: str
    checkpoint_seq: int
    event_seq: int
    conflicts: _containers.RepeatedCompositeFieldContainer[ContextConflict]
    def __init__(self, state_json: _Optional[str] = ..., checkpoint_seq: _Optional[int] = ..., event_seq: _Optional[int] = ..., conflicts: _Optional[_Iterable[_Union[ContextConflict, _Mapping]]] = ...) -> None: ...

class MergeContextReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: MergedContext
    def __init__(self, result: _Optional[_Union[MergedContext, _Mapping]] = ...) -> None: ...

class RecordEventArguments(_message.Message):
    __slots__ = ("event", "data_json", "memory_json")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    MEMORY_JSON_FIELD_NUMBER: _ClassVar[int]
    event: str
    data_json: str
    memory_json: str
    def __init__(self, event: _Optional[str] = ..., data_json: _Optional[str] = ..., memory_json: _Optional[str] = ...) -> None: ...

class RecordEventRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    arguments: RecordEventArguments
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., arguments: _Optional[_Union[RecordEventArguments, _Mapping]] = ...) -> None: ...

class RecordEventReply(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class GraphCreateEntitiesArguments(_message.Message):
    __slots__ = ("items_json",)
    ITEMS_JSON_FIELD_NUMBER: _ClassVar[int]
    items_json: str
    def __init__(self, items_json: _Optional[str] = ...) -> None: ...

class GraphCreateEntitiesRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphCreateEntitiesArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphCreateEntitiesArguments, _Mapping]] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("name", "entity_type", "observations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    entity_type: str
    observations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., entity_type: _Optional[str] = ..., observations: _Optional[_Iterable[str]] = ...) -> None: ...

class GraphCreateEntitiesReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[Entity]
    def __init__(self, result: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ...) -> None: ...

class GraphCreateRelationsArguments(_message.Message):
    __slots__ = ("items_json",)
    ITEMS_JSON_FIELD_NUMBER: _ClassVar[int]
    items_json: str
    def __init__(self, items_json: _Optional[str] = ...) -> None: ...

class GraphCreateRelationsRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphCreateRelationsArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphCreateRelationsArguments, _Mapping]] = ...) -> None: ...

class Relation(_message.Message):
    __slots__ = ("from_entity", "to_entity", "relation_type")
    FROM_ENTITY_FIELD_NUMBER: _ClassVar[int]
    TO_ENTITY_FIELD_NUMBER: _ClassVar[int]
    RELATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    from_entity: str
    to_entity: str
    relation_type: str
    def __init__(self, from_entity: _Optional[str] = ..., to_entity: _Optional[str] = ..., relation_type: _Optional[str] = ...) -> None: ...

class GraphCreateRelationsReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[Relation]
    def __init__(self, result: _Optional[_Iterable[_Union[Relation, _Mapping]]] = ...) -> None: ...

class GraphAddObservationsArguments(_message.Message):
    __slots__ = ("items_json",)
    ITEMS_JSON_FIELD_NUMBER: _ClassVar[int]
    items_json: str
    def __init__(self, items_json: _Optional[str] = ...) -> None: ...

class GraphAddObservationsRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphAddObservationsArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphAddObservationsArguments, _Mapping]] = ...) -> None: ...

class AddedObservations(_message.Message):
    __slots__ = ("entity_name", "added_observations")
    ENTITY_NAME_FIELD_NUMBER: _ClassVar[int]
    ADDED_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    entity_name: str
    added_observations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity_name: _Optional[str] = ..., added_observations: _Optional[_Iterable[str]] = ...) -> None: ...

class GraphAddObservationsReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[AddedObservations]
    def __init__(self, result: _Optional[_Iterable[_Union[AddedObservations, _Mapping]]] = ...) -> None: ...

class GraphDeleteEntitiesArguments(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class GraphDeleteEntitiesRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphDeleteEntitiesArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphDeleteEntitiesArguments, _Mapping]] = ...) -> None: ...

class GraphDeleteEntitiesReply(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class GraphDeleteObservationsArguments(_message.Message):
    __slots__ = ("items_json",)
    ITEMS_JSON_FIELD_NUMBER: _ClassVar[int]
    items_json: str
    def __init__(self, items_json: _Optional[str] = ...) -> None: ...

class GraphDeleteObservationsRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphDeleteObservationsArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphDeleteObservationsArguments, _Mapping]] = ...) -> None: ...

class GraphDeleteObservationsReply(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class GraphDeleteRelationsArguments(_message.Message):
    __slots__ = ("items_json",)
    ITEMS_JSON_FIELD_NUMBER: _ClassVar[int]
    items_json: str
    def __init__(self, items_json: _Optional[str] = ...) -> None: ...

class GraphDeleteRelationsRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphDeleteRelationsArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphDeleteRelationsArguments, _Mapping]] = ...) -> None: ...

class GraphDeleteRelationsReply(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class GraphReadGraphArguments(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GraphReadGraphRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphReadGraphArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphReadGraphArguments, _Mapping]] = ...) -> None: ...

class KnowledgeGraph(_message.Message):
    __slots__ = ("entities", "relations")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    RELATIONS_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    relations: _containers.RepeatedCompositeFieldContainer[Relation]
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., relations: _Optional[_Iterable[_Union[Relation, _Mapping]]] = ...) -> None: ...

class GraphReadGraphReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: KnowledgeGraph
    def __init__(self, result: _Optional[_Union[KnowledgeGraph, _Mapping]] = ...) -> None: ...

class GraphSearchNodesArguments(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    def __init__(self, query: _Optional[str] = ...) -> None: ...

class GraphSearchNodesRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphSearchNodesArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphSearchNodesArguments, _Mapping]] = ...) -> None: ...

class GraphSearchNodesReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: KnowledgeGraph
    def __init__(self, result: _Optional[_Union[KnowledgeGraph, _Mapping]] = ...) -> None: ...

class GraphOpenNodesArguments(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class GraphOpenNodesRequest(_message.Message):
    __slots__ = ("user", "arguments")
    USER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    arguments: GraphOpenNodesArguments
    def __init__(self, user: _Optional[str] = ..., arguments: _Optional[_Union[GraphOpenNodesArguments, _Mapping]] = ...) -> None: ...

class GraphOpenNodesReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: KnowledgeGraph
    def __init__(self, result: _Optional[_Union[KnowledgeGraph, _Mapping]] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class ForgetReport(_message.Message):
    __slots__ = ("rows_json", "events_redacted", "audit_entries_redacted", "bytes_cleared")
    ROWS_JSON_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REDACTED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRIES_REDACTED_FIELD_NUMBER: _ClassVar[int]
    BYTES_CLEARED_FIELD_NUMBER: _ClassVar[int]
    rows_json: str
    events_redacted: int
    audit_entries_redacted: int
    bytes_cleared: bool
    def __init__(self, rows_json: _Optional[str] = ..., events_redacted: _Optional[int] = ..., audit_entries_redacted: _Optional[int] = ..., bytes_cleared: _Optional[bool] = ...) -> None: ...

class ForgetUserReply(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: ForgetReport
    def __init__(self, result: _Optional[_Union[ForgetReport, _Mapping]] = ...) -> None: ...

class SetTeamRequest(_message.Message):
    __slots__ = ("user", "team", "agents")
    USER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    team: str
    agents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user: _Optional[str] = ..., team: _Optional[str] = ..., agents: _Optional[_Iterable[str]] = ...) -> None: ...

class SetTeamReply(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class ChangesRequest(_message.Message):
    __slots__ = ("user", "agent", "session", "after_seq")
    USER_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    user: str
    agent: str
    session: str
    after_seq: int
    def __init__(self, user: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class MemoryEvent(_message.Message):
    __slots__ = ("seq", "created_at", "user_id", "agent_id", "operation", "target", "data_json", "redacted")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    REDACTED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    created_at: str
    user_id: str
    agent_id: str
    operation: str
    target: str
    data_json: str
    redacted: bool
    def __init__(self, seq: _Optional[int] = ..., created_at: _Optional[str] = ..., user_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., operation: _Optional[str] = ..., target: _Optional[str] = ..., data_json: _Optional[str] = ..., redacted: _Optional[bool] = ...) -> None: ...
