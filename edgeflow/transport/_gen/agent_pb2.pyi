from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferParameter(_message.Message):
    __slots__ = ("bool_param", "int64_param", "string_param", "double_param")
    BOOL_PARAM_FIELD_NUMBER: _ClassVar[int]
    INT64_PARAM_FIELD_NUMBER: _ClassVar[int]
    STRING_PARAM_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_PARAM_FIELD_NUMBER: _ClassVar[int]
    bool_param: bool
    int64_param: int
    string_param: str
    double_param: float
    def __init__(self, bool_param: bool = ..., int64_param: _Optional[int] = ..., string_param: _Optional[str] = ..., double_param: _Optional[float] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: InferParameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[InferParameter, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    parameters: _containers.MessageMap[str, InferParameter]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., parameters: _Optional[_Mapping[str, InferParameter]] = ...) -> None: ...

class TierTiming(_message.Message):
    __slots__ = ("tier", "start", "stop", "queue_s", "compute_s", "encode_s", "decode_s", "network_s", "total_s", "bytes_in", "bytes_out", "bytes_back", "energy_j", "batch_size")
    TIER_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    ENCODE_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    NETWORK_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_BACK_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    tier: str
    start: int
    stop: int
    queue_s: float
    compute_s: float
    encode_s: float
    decode_s: float
    network_s: float
    total_s: float
    bytes_in: int
    bytes_out: int
    bytes_back: int
    energy_j: float
    batch_size: int
    def __init__(self, tier: _Optional[str] = ..., start: _Optional[int] = ..., stop: _Optional[int] = ..., queue_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., encode_s: _Optional[float] = ..., decode_s: _Optional[float] = ..., network_s: _Optional[float] = ..., total_s: _Optional[float] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ..., bytes_back: _Optional[int] = ..., energy_j: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Breakdown(_message.Message):
    __slots__ = ("tiers", "answered_by", "exit_position", "exit_confidence", "fallback")
    TIERS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    EXIT_POSITION_FIELD_NUMBER: _ClassVar[int]
    EXIT_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedCompositeFieldContainer[TierTiming]
    answered_by: str
    exit_position: int
    exit_confidence: float
    fallback: str
    def __init__(self, tiers: _Optional[_Iterable[_Union[TierTiming, _Mapping]]] = ..., answered_by: _Optional[str] = ..., exit_position: _Optional[int] = ..., exit_confidence: _Optional[float] = ..., fallback: _Optional[str] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("id", "model_fingerprint", "start", "stop", "inputs", "parameters", "raw_input_contents")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: InferParameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[InferParameter, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RAW_INPUT_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_fingerprint: str
    start: int
    stop: int
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    parameters: _containers.MessageMap[str, InferParameter]
    raw_input_contents: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, id: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., start: _Optional[int] = ..., stop: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., parameters: _Optional[_Mapping[str, InferParameter]] = ..., raw_input_contents: _Optional[_Iterable[bytes]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("id", "model_fingerprint", "position", "outputs", "breakdown", "parameters", "error_code", "error_message", "raw_output_contents")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: InferParameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[InferParameter, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RAW_OUTPUT_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_fingerprint: str
    position: int
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    breakdown: Breakdown
    parameters: _containers.MessageMap[str, InferParameter]
    error_code: int
    error_message: str
    raw_output_contents: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, id: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., position: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., breakdown: _Optional[_Union[Breakdown, _Mapping]] = ..., parameters: _Optional[_Mapping[str, InferParameter]] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., raw_output_contents: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("model_fingerprint", "caller_role", "with_upstream")
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CALLER_ROLE_FIELD_NUMBER: _ClassVar[int]
    WITH_UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    model_fingerprint: str
    caller_role: str
    with_upstream: bool
    def __init__(self, model_fingerprint: _Optional[str] = ..., caller_role: _Optional[str] = ..., with_upstream: bool = ...) -> None: ...

class RangeProfile(_message.Message):
    __slots__ = ("start", "stop", "compute_s")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    compute_s: float
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ..., compute_s: _Optional[float] = ...) -> None: ...

class Power(_message.Message):
    __slots__ = ("idle_w", "active_w", "transmit_w")
    IDLE_W_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_W_FIELD_NUMBER: _ClassVar[int]
    TRANSMIT_W_FIELD_NUMBER: _ClassVar[int]
    idle_w: float
    active_w: float
    transmit_w: float
    def __init__(self, idle_w: _Optional[float] = ..., active_w: _Optional[float] = ..., transmit_w: _Optional[float] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("role", "model_fingerprint", "num_positions", "cuts", "codecs", "plan", "profile", "slowdown_factor", "power", "torch_device", "threads", "max_message_bytes", "max_batch", "upstream", "version", "inputs", "counters", "upstream_description", "upstream_error", "live")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    NUM_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    CUTS_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SLOWDOWN_FACTOR_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    TORCH_DEVICE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_ERROR_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    role: str
    model_fingerprint: str
    num_positions: int
    cuts: _containers.RepeatedScalarFieldContainer[int]
    codecs: _containers.RepeatedScalarFieldContainer[str]
    plan: str
    profile: _containers.RepeatedCompositeFieldContainer[RangeProfile]
    slowdown_factor: float
    power: Power
    torch_device: str
    threads: int
    max_message_bytes: int
    max_batch: int
    upstream: str
    version: str
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    counters: Counters
    upstream_description: DescribeResponse
    upstream_error: str
    live: LiveState
    def __init__(self, role: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., num_positions: _Optional[int] = ..., cuts: _Optional[_Iterable[int]] = ..., codecs: _Optional[_Iterable[str]] = ..., plan: _Optional[str] = ..., profile: _Optional[_Iterable[_Union[RangeProfile, _Mapping]]] = ..., slowdown_factor: _Optional[float] = ..., power: _Optional[_Union[Power, _Mapping]] = ..., torch_device: _Optional[str] = ..., threads: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_batch: _Optional[int] = ..., upstream: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., counters: _Optional[_Union[Counters, _Mapping]] = ..., upstream_description: _Optional[_Union[DescribeResponse, _Mapping]] = ..., upstream_error: _Optional[str] = ..., live: _Optional[_Union[LiveState, _Mapping]] = ...) -> None: ...

class LiveState(_message.Message):
    __slots__ = ("ready", "safe_plan", "first_plan_s", "error", "plan", "predicted_latency_s", "links", "compute_factor", "down", "switches", "requests", "last_reason", "uptime_s")
    class ComputeFactorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    READY_FIELD_NUMBER: _ClassVar[int]
    SAFE_PLAN_FIELD_NUMBER: _ClassVar[int]
    FIRST_PLAN_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DOWN_FIELD_NUMBER: _ClassVar[int]
    SWITCHES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LAST_REASON_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    safe_plan: str
    first_plan_s: float
    error: str
    plan: str
    predicted_latency_s: float
    links: _containers.RepeatedCompositeFieldContainer[LinkReading]
    compute_factor: _containers.ScalarMap[str, float]
    down: _containers.RepeatedScalarFieldContainer[str]
    switches: _containers.RepeatedCompositeFieldContainer[PlanSwitch]
    requests: int
    last_reason: str
    uptime_s: float
    def __init__(self, ready: bool = ..., safe_plan: _Optional[str] = ..., first_plan_s: _Optional[float] = ..., error: _Optional[str] = ..., plan: _Optional[str] = ..., predicted_latency_s: _Optional[float] = ..., links: _Optional[_Iterable[_Union[LinkReading, _Mapping]]] = ..., compute_factor: _Optional[_Mapping[str, float]] = ..., down: _Optional[_Iterable[str]] = ..., switches: _Optional[_Iterable[_Union[PlanSwitch, _Mapping]]] = ..., requests: _Optional[int] = ..., last_reason: _Optional[str] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class LinkReading(_message.Message):
    __slots__ = ("name", "bandwidth_bps", "rtt_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    RTT_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    bandwidth_bps: float
    rtt_s: float
    def __init__(self, name: _Optional[str] = ..., bandwidth_bps: _Optional[float] = ..., rtt_s: _Optional[float] = ...) -> None: ...

class PlanSwitch(_message.Message):
    __slots__ = ("t_s", "request_index", "old", "new", "reason")
    T_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_INDEX_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    t_s: float
    request_index: int
    old: str
    new: str
    reason: str
    def __init__(self, t_s: _Optional[float] = ..., request_index: _Optional[int] = ..., old: _Optional[str] = ..., new: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("requests", "fallbacks", "duplicates_served", "shed", "last_fallback")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_SERVED_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    LAST_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    requests: int
    fallbacks: int
    duplicates_served: int
    shed: int
    last_fallback: str
    def __init__(self, requests: _Optional[int] = ..., fallbacks: _Optional[int] = ..., duplicates_served: _Optional[int] = ..., shed: _Optional[int] = ..., last_fallback: _Optional[str] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("id", "reply_nbytes", "echo", "forward", "forward_send_nbytes", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_NBYTES_FIELD_NUMBER: _ClassVar[int]
    ECHO_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    FORWARD_SEND_NBYTES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    reply_nbytes: int
    echo: bool
    forward: bool
    forward_send_nbytes: int
    payload: bytes
    def __init__(self, id: _Optional[str] = ..., reply_nbytes: _Optional[int] = ..., echo: bool = ..., forward: bool = ..., forward_send_nbytes: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("id", "forward_s", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORWARD_S_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    forward_s: float
    payload: bytes
    def __init__(self, id: _Optional[str] = ..., forward_s: _Optional[float] = ..., payload: _Optional[bytes] = ...) -> None: ...
