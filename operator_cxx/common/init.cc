// The library entry point MXNet calls on mx.library.load(): accept only the MXNet this was
// built against (lib_api.h ABI version 11 ships with mxnet 1.9.x).
#include "simpledet_op.h"

MXReturnValue initialize(int version) {
  if (version >= 10900 && version < 11000) return MX_SUCCESS;
  MX_ERROR_MSG << "simpledet operators were built for MXNet 1.9.x, but MXNet " << version
               << " loaded them; reinstall simpledet against the installed mxnet";
  return MX_FAIL;
}
