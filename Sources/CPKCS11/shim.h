#ifndef CUSTOS_CPKCS11_SHIM_H
#define CUSTOS_CPKCS11_SHIM_H
// p11-kit ships the OASIS PKCS#11 v2.40 header with the platform packing and
// CK_PTR conventions already set for Linux.
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#endif
