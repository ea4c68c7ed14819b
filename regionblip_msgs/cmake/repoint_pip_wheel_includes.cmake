# The pip ROS 2 wheels (ros-kilted-*) export *__rosidl_generator_py targets whose
# INTERFACE_INCLUDE_DIRECTORIES point at the Python of the machine that built the wheels
# (/opt/python/cp311-cp311/...). repoint_pip_wheel_includes(dep ...) points those of the given
# packages at this machine's Python and NumPy headers, before rosidl links an interface package's
# Python bindings against them. On an apt-installed ROS 2 the paths exist and nothing is changed.
# Used by regionblip_msgs and by the test-only tests/data/vision_msgs.
function(repoint_pip_wheel_includes)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
  foreach(dep IN LISTS ARGN)
    set(target "${dep}::${dep}__rosidl_generator_py")
    if(TARGET ${target})
      get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
      set(missing FALSE)
      foreach(dir IN LISTS dirs)
        if(NOT dir MATCHES "^\\$<" AND NOT EXISTS "${dir}")
          set(missing TRUE)
        endif()
      endforeach()
      if(missing)
        message(STATUS "${PROJECT_NAME}: re-pointing ${target} include dirs to the local Python")
        set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
          "${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
      endif()
    endif()
  endforeach()
endfunction()
