# cmake -DSRC=<seed dir> -DDST=<work dir> -P copy_corpus.cmake
# A fresh copy of the seed corpus for one fuzz run, outside the source tree.
file(REMOVE_RECURSE "${DST}")
file(MAKE_DIRECTORY "${DST}")
file(COPY "${SRC}/" DESTINATION "${DST}")
