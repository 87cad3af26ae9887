/*
 * The subset of the LiteRT C API that the harness calls, declared by us (no headers ship
 * with libLiteRt.so) and pinned to LiteRT 2.3.0 (ai-edge-litert==2.3.0, the Android AAR
 * com.google.ai.edge.litert:litert 2.x). Checked against the litert/c headers of that release:
 * LiteRtCreateModelFromFile takes the environment first (since 2.1.6); sizes below are
 * asserted at compile time. Loaded with dlopen, so the harness builds without the library.
 */
#ifndef EE_LITERT_API_H
#define EE_LITERT_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef int LiteRtStatus; /* kLiteRtStatusOk == 0 */
typedef size_t LiteRtParamIndex;
typedef struct LiteRtEnvironmentT *LiteRtEnvironment;
typedef struct LiteRtModelT *LiteRtModel;
typedef struct LiteRtSignatureT *LiteRtSignature;
typedef struct LiteRtTensorT *LiteRtTensor;
typedef struct LiteRtOptionsT *LiteRtOptions;
typedef struct LiteRtOpaqueOptionsT *LiteRtOpaqueOptions;
typedef struct LiteRtCompiledModelT *LiteRtCompiledModel;
typedef struct LiteRtTensorBufferT *LiteRtTensorBuffer;
typedef struct LiteRtTensorBufferRequirementsT *LiteRtTensorBufferRequirements;

enum {
    kLiteRtStatusOk = 0,
    kLiteRtStatusErrorFileIO = 500,
    kLiteRtStatusErrorInvalidFlatbuffer = 501,
};
enum { kLiteRtHwAcceleratorCpu = 1 };
enum { kLiteRtTensorBufferLockModeRead = 0, kLiteRtTensorBufferLockModeWrite = 1 };
enum { kLiteRtQuantizationNone = 0, kLiteRtQuantizationPerTensor = 1 };
enum { kLiteRtEnvOptionTagAutoRegisterAccelerators = 24, kLiteRtEnvOptionTagMinLoggerSeverity = 25 };
enum { kLiteRtAnyTypeInt = 2 };

typedef struct {
    unsigned int rank : 7;
    unsigned int has_strides : 1;
    int32_t dimensions[8];
    uint32_t strides[8];
} LiteRtLayout;

typedef struct {
    int element_type; /* Float32 = 1, Int32 = 2, Int64 = 4, Int8 = 9 */
    LiteRtLayout layout;
} LiteRtRankedTensorType;

typedef struct {
    float scale;
    int64_t zero_point;
} LiteRtQuantizationPerTensor;

typedef struct {
    int type;
    union {
        bool bool_value;
        int64_t int_value;
        double real_value;
        const char *str_value;
        const void *ptr_value;
    } v;
} LiteRtAny;

typedef struct {
    int tag;
    LiteRtAny value;
} LiteRtEnvOption;

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(LiteRtLayout) == 68, "LiteRtLayout must be 68 bytes (LiteRT 2.3)");
_Static_assert(sizeof(LiteRtRankedTensorType) == 72, "LiteRtRankedTensorType must be 72 bytes (LiteRT 2.3)");
_Static_assert(sizeof(LiteRtQuantizationPerTensor) == 16, "LiteRtQuantizationPerTensor must be 16 bytes");
_Static_assert(sizeof(LiteRtEnvOption) == 24 || sizeof(void *) == 4, "LiteRtEnvOption must be 24 bytes on LP64");
#endif

/* X(return type, name, argument list): every function we resolve with dlsym. */
#define EE_LITERT_FUNCTIONS(X)                                                                                 \
    X(LiteRtStatus, LiteRtCreateEnvironment, (int, const LiteRtEnvOption *, LiteRtEnvironment *))             \
    X(void, LiteRtDestroyEnvironment, (LiteRtEnvironment))                                                     \
    X(LiteRtStatus, LiteRtCreateModelFromFile, (LiteRtEnvironment, const char *, LiteRtModel *))              \
    X(LiteRtStatus, LiteRtCreateModelFromBuffer, (LiteRtEnvironment, const void *, size_t, LiteRtModel *))     \
    X(void, LiteRtDestroyModel, (LiteRtModel))                                                                 \
    X(LiteRtStatus, LiteRtGetNumModelSignatures, (LiteRtModel, LiteRtParamIndex *))                           \
    X(LiteRtStatus, LiteRtGetModelSignature, (LiteRtModel, LiteRtParamIndex, LiteRtSignature *))              \
    X(LiteRtStatus, LiteRtGetNumSignatureInputs, (LiteRtSignature, LiteRtParamIndex *))                       \
    X(LiteRtStatus, LiteRtGetNumSignatureOutputs, (LiteRtSignature, LiteRtParamIndex *))                      \
    X(LiteRtStatus, LiteRtGetSignatureKey, (LiteRtSignature, const char **))                                   \
    X(LiteRtStatus, LiteRtGetSignatureInputName, (LiteRtSignature, LiteRtParamIndex, const char **))          \
    X(LiteRtStatus, LiteRtGetSignatureOutputName, (LiteRtSignature, LiteRtParamIndex, const char **))         \
    X(LiteRtStatus, LiteRtGetSignatureInputTensorByIndex, (LiteRtSignature, LiteRtParamIndex, LiteRtTensor *)) \
    X(LiteRtStatus, LiteRtGetSignatureOutputTensorByIndex, (LiteRtSignature, LiteRtParamIndex, LiteRtTensor *))\
    X(LiteRtStatus, LiteRtGetRankedTensorType, (LiteRtTensor, LiteRtRankedTensorType *))                      \
    X(LiteRtStatus, LiteRtGetQuantizationTypeId, (LiteRtTensor, int *))                                        \
    X(LiteRtStatus, LiteRtGetPerTensorQuantization, (LiteRtTensor, LiteRtQuantizationPerTensor *))            \
    X(LiteRtStatus, LiteRtCreateOptions, (LiteRtOptions *))                                                    \
    X(void, LiteRtDestroyOptions, (LiteRtOptions))                                                             \
    X(LiteRtStatus, LiteRtSetOptionsHardwareAccelerators, (LiteRtOptions, int))                               \
    X(LiteRtStatus, LiteRtCreateOpaqueOptions, (const char *, void *, void (*)(void *), LiteRtOpaqueOptions *))\
    X(void, LiteRtDestroyOpaqueOptions, (LiteRtOpaqueOptions))                                                 \
    X(LiteRtStatus, LiteRtAddOpaqueOptions, (LiteRtOptions, LiteRtOpaqueOptions))                             \
    X(LiteRtStatus, LiteRtCreateCompiledModel, (LiteRtEnvironment, LiteRtModel, LiteRtOptions,                 \
                                                LiteRtCompiledModel *))                                        \
    X(void, LiteRtDestroyCompiledModel, (LiteRtCompiledModel))                                                 \
    X(LiteRtStatus, LiteRtRunCompiledModel, (LiteRtCompiledModel, LiteRtParamIndex, size_t,                    \
                                             LiteRtTensorBuffer *, size_t, LiteRtTensorBuffer *))              \
    X(LiteRtStatus, LiteRtGetCompiledModelInputBufferRequirements,                                             \
      (LiteRtCompiledModel, LiteRtParamIndex, LiteRtParamIndex, LiteRtTensorBufferRequirements *))             \
    X(LiteRtStatus, LiteRtGetCompiledModelOutputBufferRequirements,                                            \
      (LiteRtCompiledModel, LiteRtParamIndex, LiteRtParamIndex, LiteRtTensorBufferRequirements *))             \
    X(LiteRtStatus, LiteRtCreateManagedTensorBufferFromRequirements,                                           \
      (LiteRtEnvironment, const LiteRtRankedTensorType *, LiteRtTensorBufferRequirements, LiteRtTensorBuffer *))\
    X(LiteRtStatus, LiteRtLockTensorBuffer, (LiteRtTensorBuffer, void **, int))                                \
    X(LiteRtStatus, LiteRtUnlockTensorBuffer, (LiteRtTensorBuffer))                                            \
    X(LiteRtStatus, LiteRtGetTensorBufferPackedSize, (LiteRtTensorBuffer, size_t *))                          \
    X(void, LiteRtDestroyTensorBuffer, (LiteRtTensorBuffer))

/* Exported by 2.3.x and absent from 2.2.x: the version sentinel. */
#define EE_LITERT_SENTINEL "LiteRtCompiledModelIsNonCpuFullyAccelerated"

typedef struct {
#define EE_LITERT_FIELD(ret, name, args) ret(*name) args;
    EE_LITERT_FUNCTIONS(EE_LITERT_FIELD)
#undef EE_LITERT_FIELD
} ee_litert_api;

#endif /* EE_LITERT_API_H */
