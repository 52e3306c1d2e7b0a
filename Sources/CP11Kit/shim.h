// The PKCS#11 API as p11-kit ships it, with the standard names (pIv, ulValueLen, CK_RV…).
// Redoubt does not link any PKCS#11 module: it dlopen()s the one a URI names.
#define CRYPTOKI_COMPAT 1
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
