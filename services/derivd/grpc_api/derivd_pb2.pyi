from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_AUTO: _ClassVar[Mode]
    MODE_FORWARD: _ClassVar[Mode]
    MODE_REVERSE: _ClassVar[Mode]
    MODE_TAYLOR: _ClassVar[Mode]
    MODE_FINITE: _ClassVar[Mode]

class SessionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_VALUE: _ClassVar[SessionKind]
    SESSION_GRADIENT: _ClassVar[SessionKind]
    SESSION_JACOBIAN: _ClassVar[SessionKind]
    SESSION_HVP: _ClassVar[SessionKind]
    SESSION_HESSIAN: _ClassVar[SessionKind]
    SESSION_TAYLOR: _ClassVar[SessionKind]
MODE_AUTO: Mode
MODE_FORWARD: Mode
MODE_REVERSE: Mode
MODE_TAYLOR: Mode
MODE_FINITE: Mode
SESSION_VALUE: SessionKind
SESSION_GRADIENT: SessionKind
SESSION_JACOBIAN: SessionKind
SESSION_HVP: SessionKind
SESSION_HESSIAN: SessionKind
SESSION_TAYLOR: SessionKind

class Array(_message.Message):
    __slots__ = ("shape", "data", "dtype")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    dtype: str
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., dtype: _Optional[str] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("dsl", "id", "blackbox")
    DSL_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    BLACKBOX_FIELD_NUMBER: _ClassVar[int]
    dsl: str
    id: str
    blackbox: str
    def __init__(self, dsl: _Optional[str] = ..., id: _Optional[str] = ..., blackbox: _Optional[str] = ...) -> None: ...

class FiniteDifferences(_message.Message):
    __slots__ = ("method", "order", "step", "extrapolation")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EXTRAPOLATION_FIELD_NUMBER: _ClassVar[int]
    method: str
    order: int
    step: float
    extrapolation: bool
    def __init__(self, method: _Optional[str] = ..., order: _Optional[int] = ..., step: _Optional[float] = ..., extrapolation: _Optional[bool] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("max_abs_err", "max_rel_err", "passed")
    MAX_ABS_ERR_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_ERR_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    max_abs_err: float
    max_rel_err: float
    passed: bool
    def __init__(self, max_abs_err: _Optional[float] = ..., max_rel_err: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("compile_ms", "queue_ms", "compute_ms", "tier")
    COMPILE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    compile_ms: float
    queue_ms: float
    compute_ms: float
    tier: int
    def __init__(self, compile_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., tier: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("value", "engine", "verification", "timing")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: Array
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, value: _Optional[_Union[Array, _Mapping]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class GradientRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ...) -> None: ...

class GradientResponse(_message.Message):
    __slots__ = ("value", "gradient", "engine", "verification", "timing")
    class GradientEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: float
    gradient: _containers.MessageMap[str, Array]
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, value: _Optional[float] = ..., gradient: _Optional[_Mapping[str, Array]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class JacobianRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify", "sparse")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    sparse: bool
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ..., sparse: _Optional[bool] = ...) -> None: ...

class CooMatrix(_message.Message):
    __slots__ = ("rows", "cols", "values", "shape")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedScalarFieldContainer[int]
    cols: _containers.RepeatedScalarFieldContainer[int]
    values: Array
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, rows: _Optional[_Iterable[int]] = ..., cols: _Optional[_Iterable[int]] = ..., values: _Optional[_Union[Array, _Mapping]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class JacobianResponse(_message.Message):
    __slots__ = ("value", "jacobian", "jacobian_coo", "shape", "engine", "verification", "timing")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    JACOBIAN_FIELD_NUMBER: _ClassVar[int]
    JACOBIAN_COO_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: Array
    jacobian: Array
    jacobian_coo: CooMatrix
    shape: _containers.RepeatedScalarFieldContainer[int]
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, value: _Optional[_Union[Array, _Mapping]] = ..., jacobian: _Optional[_Union[Array, _Mapping]] = ..., jacobian_coo: _Optional[_Union[CooMatrix, _Mapping]] = ..., shape: _Optional[_Iterable[int]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class JvpRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify", "v")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class VEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    v: _containers.MessageMap[str, Array]
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ..., v: _Optional[_Mapping[str, Array]] = ...) -> None: ...

class JvpResponse(_message.Message):
    __slots__ = ("value", "jvp", "engine", "verification", "timing")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    JVP_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: Array
    jvp: Array
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, value: _Optional[_Union[Array, _Mapping]] = ..., jvp: _Optional[_Union[Array, _Mapping]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class VjpRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify", "u")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    U_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    u: Array
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ..., u: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...

class VjpResponse(_message.Message):
    __slots__ = ("value", "vjp", "engine", "verification", "timing")
    class VjpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VJP_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: Array
    vjp: _containers.MessageMap[str, Array]
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, value: _Optional[_Union[Array, _Mapping]] = ..., vjp: _Optional[_Mapping[str, Array]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class HvpRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify", "v")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class VEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    v: _containers.MessageMap[str, Array]
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ..., v: _Optional[_Mapping[str, Array]] = ...) -> None: ...

class HvpResponse(_message.Message):
    __slots__ = ("value", "hvp", "engine", "verification", "timing")
    class HvpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HVP_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: float
    hvp: _containers.MessageMap[str, Array]
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, value: _Optional[float] = ..., hvp: _Optional[_Mapping[str, Array]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class HessianRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ...) -> None: ...

class HessianResponse(_message.Message):
    __slots__ = ("value", "gradient", "hessian", "engine", "verification", "timing")
    class GradientEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: float
    gradient: _containers.MessageMap[str, Array]
    hessian: Array
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, value: _Optional[float] = ..., gradient: _Optional[_Mapping[str, Array]] = ..., hessian: _Optional[_Union[Array, _Mapping]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class TaylorRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "fd", "verify", "v", "order")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class VEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    fd: FiniteDifferences
    verify: bool
    v: _containers.MessageMap[str, Array]
    order: int
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., fd: _Optional[_Union[FiniteDifferences, _Mapping]] = ..., verify: _Optional[bool] = ..., v: _Optional[_Mapping[str, Array]] = ..., order: _Optional[int] = ...) -> None: ...

class TaylorResponse(_message.Message):
    __slots__ = ("coefficients", "value", "engine", "verification", "timing")
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    coefficients: Array
    value: Array
    engine: str
    verification: Verification
    timing: Timing
    def __init__(self, coefficients: _Optional[_Union[Array, _Mapping]] = ..., value: _Optional[_Union[Array, _Mapping]] = ..., engine: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class DerivativesRequest(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "order")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    order: int
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., order: _Optional[int] = ...) -> None: ...

class DerivativesResponse(_message.Message):
    __slots__ = ("value", "tensors", "directions", "engine", "timing")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: Array
    tensors: _containers.RepeatedCompositeFieldContainer[Array]
    directions: int
    engine: str
    timing: Timing
    def __init__(self, value: _Optional[_Union[Array, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[Array, _Mapping]]] = ..., directions: _Optional[int] = ..., engine: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class HvpStreamStart(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ...) -> None: ...

class Direction(_message.Message):
    __slots__ = ("v",)
    class VEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    V_FIELD_NUMBER: _ClassVar[int]
    v: _containers.MessageMap[str, Array]
    def __init__(self, v: _Optional[_Mapping[str, Array]] = ...) -> None: ...

class HvpStreamRequest(_message.Message):
    __slots__ = ("start", "direction")
    START_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    start: HvpStreamStart
    direction: Direction
    def __init__(self, start: _Optional[_Union[HvpStreamStart, _Mapping]] = ..., direction: _Optional[_Union[Direction, _Mapping]] = ...) -> None: ...

class HvpStarted(_message.Message):
    __slots__ = ("value", "gradient", "engine", "timing")
    class GradientEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    value: float
    gradient: _containers.MessageMap[str, Array]
    engine: str
    timing: Timing
    def __init__(self, value: _Optional[float] = ..., gradient: _Optional[_Mapping[str, Array]] = ..., engine: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class HvpAnswer(_message.Message):
    __slots__ = ("index", "hvp")
    class HvpEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HVP_FIELD_NUMBER: _ClassVar[int]
    index: int
    hvp: _containers.MessageMap[str, Array]
    def __init__(self, index: _Optional[int] = ..., hvp: _Optional[_Mapping[str, Array]] = ...) -> None: ...

class HvpStreamResponse(_message.Message):
    __slots__ = ("started", "hvp")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    HVP_FIELD_NUMBER: _ClassVar[int]
    started: HvpStarted
    hvp: HvpAnswer
    def __init__(self, started: _Optional[_Union[HvpStarted, _Mapping]] = ..., hvp: _Optional[_Union[HvpAnswer, _Mapping]] = ...) -> None: ...

class SessionOpen(_message.Message):
    __slots__ = ("function", "at", "constants", "wrt", "mode", "store", "kind")
    class AtEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Array
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    function: Function
    at: _containers.MessageMap[str, Array]
    constants: _containers.MessageMap[str, Array]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    store: bool
    kind: SessionKind
    def __init__(self, function: _Optional[_Union[Function, _Mapping]] = ..., at: _Optional[_Mapping[str, Array]] = ..., constants: _Optional[_Mapping[str, Array]] = ..., wrt: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., store: _Optional[bool] = ..., kind: _Optional[_Union[SessionKind, str]] = ...) -> None: ...

class SessionAsk(_message.Message):
    __slots__ = ("id", "kind", "x", "v", "order")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: SessionKind
    x: Array
    v: Array
    order: int
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[_Union[SessionKind, str]] = ..., x: _Optional[_Union[Array, _Mapping]] = ..., v: _Optional[_Union[Array, _Mapping]] = ..., order: _Optional[int] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("open", "ask", "end")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    open: SessionOpen
    ask: SessionAsk
    end: SessionEnd
    def __init__(self, open: _Optional[_Union[SessionOpen, _Mapping]] = ..., ask: _Optional[_Union[SessionAsk, _Mapping]] = ..., end: _Optional[_Union[SessionEnd, _Mapping]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("wrt", "n", "out_shape", "value", "timing", "function_id", "answer")
    WRT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    OUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    n: _containers.RepeatedScalarFieldContainer[int]
    out_shape: _containers.RepeatedScalarFieldContainer[int]
    value: Array
    timing: Timing
    function_id: str
    answer: SessionAnswer
    def __init__(self, wrt: _Optional[_Iterable[str]] = ..., n: _Optional[_Iterable[int]] = ..., out_shape: _Optional[_Iterable[int]] = ..., value: _Optional[_Union[Array, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., function_id: _Optional[str] = ..., answer: _Optional[_Union[SessionAnswer, _Mapping]] = ...) -> None: ...

class SessionAnswer(_message.Message):
    __slots__ = ("id", "value", "gradient", "jacobian", "hvp", "hessian", "coefficients", "engine", "timing", "error", "status")
    ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    JACOBIAN_FIELD_NUMBER: _ClassVar[int]
    HVP_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: int
    value: Array
    gradient: Array
    jacobian: Array
    hvp: Array
    hessian: Array
    coefficients: Array
    engine: str
    timing: Timing
    error: Error
    status: int
    def __init__(self, id: _Optional[int] = ..., value: _Optional[_Union[Array, _Mapping]] = ..., gradient: _Optional[_Union[Array, _Mapping]] = ..., jacobian: _Optional[_Union[Array, _Mapping]] = ..., hvp: _Optional[_Union[Array, _Mapping]] = ..., hessian: _Optional[_Union[Array, _Mapping]] = ..., coefficients: _Optional[_Union[Array, _Mapping]] = ..., engine: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., status: _Optional[int] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("opened", "answer", "ended")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    answer: SessionAnswer
    ended: SessionEnded
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., answer: _Optional[_Union[SessionAnswer, _Mapping]] = ..., ended: _Optional[_Union[SessionEnded, _Mapping]] = ...) -> None: ...

class SessionEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionEnded(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TransportsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TransportsResponse(_message.Message):
    __slots__ = ("session_socket_port", "session_socket_keep_s")
    SESSION_SOCKET_PORT_FIELD_NUMBER: _ClassVar[int]
    SESSION_SOCKET_KEEP_S_FIELD_NUMBER: _ClassVar[int]
    session_socket_port: int
    session_socket_keep_s: float
    def __init__(self, session_socket_port: _Optional[int] = ..., session_socket_keep_s: _Optional[float] = ...) -> None: ...

class SessionSocketHello(_message.Message):
    __slots__ = ("api_key", "request_id", "timeout_s")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    request_id: str
    timeout_s: float
    def __init__(self, api_key: _Optional[str] = ..., request_id: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "detail_json")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    detail_json: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...
