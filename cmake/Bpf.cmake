# BPF build pipeline: clang -target bpf -> object -> bpftool gen skeleton.
# Header dependencies are tracked with a depfile (-MD), so editing bpf/lib/*.h
# or the ABI header rebuilds the object and its skeleton.
find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

execute_process(COMMAND uname -m OUTPUT_VARIABLE RINGMESH_ARCH OUTPUT_STRIP_TRAILING_WHITESPACE)
if(RINGMESH_ARCH STREQUAL "x86_64")
  set(RINGMESH_BPF_ARCH x86)
elseif(RINGMESH_ARCH STREQUAL "aarch64")
  set(RINGMESH_BPF_ARCH arm64)
else()
  set(RINGMESH_BPF_ARCH ${RINGMESH_ARCH})
endif()

# bpf_object(NAME src.bpf.c) creates target NAME_skel providing
# ${CMAKE_CURRENT_BINARY_DIR}/NAME.skel.h as an INTERFACE include.
function(bpf_object name src)
  set(obj ${CMAKE_CURRENT_BINARY_DIR}/${name}.bpf.o)
  set(skel ${CMAKE_CURRENT_BINARY_DIR}/${name}.skel.h)
  set(dep ${CMAKE_CURRENT_BINARY_DIR}/${name}.bpf.d)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_${RINGMESH_BPF_ARCH}
            -Wall -Werror
            -I${PROJECT_SOURCE_DIR}/bpf/include -I${PROJECT_SOURCE_DIR}/bpf
            -I/usr/include/${RINGMESH_ARCH}-linux-gnu
            -MD -MF ${dep}
            -c ${CMAKE_CURRENT_SOURCE_DIR}/${src} -o ${obj}
    DEPFILE ${dep}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${src}
    COMMENT "BPF ${src}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name} > ${skel}
    DEPENDS ${obj}
    COMMENT "bpftool gen skeleton ${name}"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${CMAKE_CURRENT_BINARY_DIR})
  set_property(TARGET ${name}_skel PROPERTY RINGMESH_BPF_OBJECT ${obj})
endfunction()
