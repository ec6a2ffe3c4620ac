// Debian's libjpeg-turbo (libturbojpeg0-dev): JPEG for uint8 images on slow tcp:// links.
#include <turbojpeg.h>
