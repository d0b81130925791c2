// Windows only. The addon imports Node-API from "node.exe"; inside Electron (electron.exe) or a
// renamed node binary that module does not exist. Linked with /DELAYLOAD:node.exe, this hook
// answers the loader's request for node.exe with the running executable, which exports Node-API.
#if defined(_MSC_VER)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <delayimp.h>
#include <string.h>

static FARPROC WINAPI MinigptLoadHostInsteadOfNode(unsigned event, PDelayLoadInfo info) {
  if (event == dliNotePreLoadLibrary && _stricmp(info->szDll, "node.exe") == 0) {
    return reinterpret_cast<FARPROC>(GetModuleHandle(nullptr));
  }
  return nullptr;
}

extern "C" const PfnDliHook __pfnDliNotifyHook2 = MinigptLoadHostInsteadOfNode;
#endif
